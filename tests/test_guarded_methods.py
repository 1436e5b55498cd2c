"""A method's output is checked before it is saved: what the scorer cannot use is refused with the reason."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from diffbench.core import Finding, InvalidFindingsError, Readout, validate_findings

D = 8
CTX = SimpleNamespace(model_a=SimpleNamespace(hidden_size=D, n_layers=4), model_b=SimpleNamespace(hidden_size=D, n_layers=4),
                      layers=[2], layers_b=None)


def good(fid="f", **kw):
    base = dict(id=fid, uniqueness=1.0, flagged=True, readout=Readout(2, 2, w_a=-torch.ones(D), w_b=torch.ones(D)),
                direction=torch.ones(D), direction_layer=2, tokens=["a"], token_ids=[5])
    return Finding(**{**base, **kw})


def test_valid_output_passes_including_numpy_scalars():
    validate_findings([good("a"), good("b", uniqueness=np.float32(0.5), flagged=np.bool_(False), token_ids=[np.int64(3)],
                                       direction_layer=np.int64(3)), good("c", readout=Readout(3, 3, kind="diff_norm"))], CTX)
    validate_findings([], CTX)


@pytest.mark.parametrize("bad, words", [
    (lambda: good(uniqueness=float("nan")), "uniqueness"),
    (lambda: good(uniqueness="high"), "uniqueness"),
    (lambda: good(flagged="yes"), "flagged"),
    (lambda: good(side="c"), "side"),
    (lambda: good(readout=Readout(2, 2, w_b=torch.ones(D + 1))), "width 8"),
    (lambda: good(readout=Readout(2, 2, w_b=torch.ones(D, 2))), "width 8"),
    (lambda: good(readout=Readout(2, 2, w_b=torch.full((D,), float("inf")))), "non-finite"),
    (lambda: good(readout=Readout(2, 2)), "needs w_a or w_b"),
    (lambda: good(readout=Readout(7, 7, w_b=torch.ones(D))), "not residual indices"),
    (lambda: good(readout=Readout(2.0, 2, w_b=torch.ones(D))), "not residual indices"),
    (lambda: good(readout=Readout(2, 2, w_b=torch.ones(D), act="gelu")), "unknown readout"),
    (lambda: good(readout=Readout(2, 2, w_b=torch.ones(D), bias=float("nan"))), "finite"),
    (lambda: good(direction=torch.ones(D - 1)), "direction"),
    (lambda: good(direction_layer=None), "direction_layer"),
    (lambda: good(token_ids=["5"]), "token_ids"),
    (lambda: {"id": "x"}, "not a Finding"),
])
def test_invalid_output_is_refused_with_the_reason(bad, words):
    with pytest.raises(InvalidFindingsError, match=words):
        validate_findings([bad()], CTX)


def test_duplicate_ids_and_non_lists_are_refused():
    with pytest.raises(InvalidFindingsError, match="unique"):
        validate_findings([good("x"), good("x")], CTX)
    with pytest.raises(InvalidFindingsError, match="list"):
        validate_findings((good(),), CTX)
