"""Stage 2, corpus + collect: the audit corpus (base answers) and every model's activations on it and on the
behaviors' probes, stored on disk under content keys (harness/data/store.py). Returns the store folders."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ...core.io import write_json
from ...core.env import say
from ..workspace import Workspace

log = logging.getLogger(__name__)


def run(ws: Workspace) -> set[str]:
    t0 = time.time()
    roots = set()
    for pair in ws.suite.pairs:
        if ws.pair_status(pair) != "ok":
            continue
        p = ws.paired_corpus(pair)
        roots |= {p.a.root, p.b.root}
        if p.alignment is not None:
            st = p.alignment.stats
            write_json(ws.run_dir / "alignment" / f"{pair.id}.json", st)
            say(f"aligned {pair.id}: {st['n_pairs']} positions = {st['share_a']:.0%} of A's tokens, {st['share_b']:.0%} of B's; "
                f"{st['content_share_a']:.0%} / {st['content_share_b']:.0%} of the tokens that read shared content "
                f"(each model's chat template is its own)")
        for b in pair.behaviors:
            # cross-architecture pairs also score each side against its own unmodified base
            nodes = [pair.a, pair.b] + ([ws.base_of(pair.a), ws.base_of(pair.b)] if pair.cross else [])
            for name in dict.fromkeys(ws.canon(n) for n in nodes):
                m = ws.model(name)
                roots.add(ws.collect(m, ws.probe_set(b, m.tokenizer)[0]).root)
    say(f"collected activations in {time.time() - t0:.0f}s; {len(roots)} stores under {Path(next(iter(roots))).parent if roots else '-'}")
    for r in sorted(roots):
        log.debug("store %s", r)
    return {str(r) for r in roots}
