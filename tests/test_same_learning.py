"""scripts/same_learning.py, the refactor guard: its fingerprint ignores only the wall clock, and every case it
runs is a valid CMIL configuration that takes an option path the `default` preset does not."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from cmil.cli import _train_config
from cmil.config_io import flatten, validate
from cmil.methods.cmil import CMIL

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "same_learning.py"
_spec = importlib.util.spec_from_file_location("same_learning", _SCRIPT)
same_learning = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(same_learning)


def _fake_run(root: Path, model: bytes, rows: list[dict]) -> Path:
    root.mkdir()
    (root / "model.safetensors").write_bytes(model)
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_fingerprint_ignores_the_wall_clock_and_nothing_else(tmp_path):
    rows = [{"step": 10, "train/bc_loss": 0.5, "wall_time": 1.0}, {"step": 20, "eval/success_rate": 0.25}]
    base = same_learning.fingerprint(_fake_run(tmp_path / "a", b"weights", rows))
    slower = [{**rows[0], "wall_time": 7.5}, rows[1]]
    assert same_learning.fingerprint(_fake_run(tmp_path / "b", b"weights", slower)) == base
    other_metric = [{**rows[0], "train/bc_loss": 0.5000001}, rows[1]]
    assert same_learning.fingerprint(_fake_run(tmp_path / "c", b"weights", other_metric)) != base
    assert same_learning.fingerprint(_fake_run(tmp_path / "d", b"weightz", rows)) != base
    assert same_learning.fingerprint(_fake_run(tmp_path / "e", b"weights", rows[:1])) != base


@pytest.mark.parametrize("name", sorted(same_learning.CASES))
def test_each_case_is_a_valid_cmil_run_off_the_default_path(name):
    flags = same_learning.CASES[name]
    cfg = _train_config(["--method", "cmil", "--dry-run", *flags])
    validate(cfg)
    CMIL(cfg, 4, torch.device("cpu"))   # the method's own checks of option combinations
    if name != "default":
        default = flatten(_train_config(["--method", "cmil", "--dry-run", "--preset", "default"]))
        assert flatten(cfg) != default
