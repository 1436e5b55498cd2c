import pytest

from diffbench.harness.tracking import Tracker


def test_tracking_off_by_default_is_a_no_op(tmp_path):
    t = Tracker({}, str(tmp_path), {})
    t.log({"x": 1.0})
    t.finish()
    assert t.run is None and not any(tmp_path.iterdir())


def test_offline_wandb_writes_locally_without_network(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    t = Tracker({"enabled": True, "mode": "offline", "project": "diffbench-test"}, str(tmp_path), {"a": 1})
    t.log({"recall@20": 0.5, "label": "not a number"})
    t.finish()
    assert list(tmp_path.glob("wandb/offline-run-*"))


def test_bad_mode_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="wandb.mode"):
        Tracker({"enabled": True, "mode": "sometimes"}, str(tmp_path), {})
