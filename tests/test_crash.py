"""Nothing is lost on a crash: kill -9 a small run at random moments and rerun it until it finishes;
it must end exactly as an uninterrupted run (weights, episodes, metrics). Also the crash edges a
kill leaves: a damaged latest checkpoint, stale temporary files, rows logged after the checkpoint."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cmil.cli import main
from cmil.data.collect import collect_demos
from cmil.runs import read_metrics

SRC = str(Path(__file__).parents[1] / "src")
# CMIL (recurrent policy, running discriminator statistics) with a checkpoint after every episode;
# evaluations at env steps 90 and 150, so the checkpoint at 120 holds statistics of updates since 90.
ARGS = ["train", "--method", "cmil", "--task", "point", "--dry-run", "--threads", "1", "--env-steps", "120",
        "--checkpoint-every", "20", "--log-every", "20", "--eval-every", "70", "--video-episodes", "0"]


def _command(run: Path, demos: Path) -> list[str]:
    return [sys.executable, "-m", "cmil.cli", *ARGS, "--demos", str(demos), "--run-dir", str(run)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """(demos, an uninterrupted run)."""
    base = tmp_path_factory.mktemp("crash")
    demos = base / "demos"
    collect_demos("point", 2, demos, seed=0, quiet=True)
    run = base / "reference"
    proc = subprocess.run(_command(run, demos), env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return demos, run


def _assert_same_run(run: Path, ref: Path) -> None:
    assert (run / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()
    names = sorted(p.name for p in (ref / "episodes").iterdir())
    assert sorted(p.name for p in (run / "episodes").iterdir()) == names
    for name in names:
        with np.load(run / "episodes" / name) as a, np.load(ref / "episodes" / name) as b:
            assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files), name

    def rows(path):
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in read_metrics(path)]

    assert rows(run) == rows(ref)  # no row lost, none duplicated, the same values

    def final(path):
        return {k: v for k, v in json.loads((path / "final.json").read_text()).items() if k != "wall_time_s"}

    assert final(run) == final(ref)


def _progress(run: Path) -> int:
    """How far a run has got on disk: episode files plus metric rows (both only grow)."""
    episodes = len(list((run / "episodes").glob("*.npz"))) if (run / "episodes").is_dir() else 0
    metrics = run / "metrics.jsonl"
    return episodes + (len(metrics.read_text().splitlines()) if metrics.exists() else 0)


def test_kill_9_at_random_moments_then_rerun_equals_an_uninterrupted_run(reference, tmp_path):
    demos, ref = reference
    run = tmp_path / "killed"
    rng = random.Random(10)
    kills = 0
    while True:
        log = (tmp_path / f"stderr{kills}.txt").open("w")
        proc = subprocess.Popen(_command(run, demos), env=_env(), stdout=subprocess.DEVNULL, stderr=log)
        # Kill by progress, not by the clock (a fast machine would finish before a timed kill): once
        # the run has written 1-3 more files or rows than it had, wait a random moment, then SIGKILL.
        # After 4 kills, let it finish.
        target, delay = _progress(run) + rng.randint(1, 3), rng.uniform(0.0, 0.3)
        deadline = time.monotonic() + 300
        while kills < 4 and proc.poll() is None and _progress(run) < target and time.monotonic() < deadline:
            time.sleep(0.01)
        if kills < 4 and proc.poll() is None:
            time.sleep(delay)
            proc.kill()  # SIGKILL: no cleanup of any kind
        rc = proc.wait(timeout=300)
        log.close()
        if rc == -signal.SIGKILL:
            kills += 1
            continue
        assert rc == 0, (tmp_path / f"stderr{kills}.txt").read_text()
        break
    assert kills >= 1
    _assert_same_run(run, ref)
    assert not list(run.rglob(".*.npz.*")) and not list((run / "checkpoints").glob(".step_*"))


def test_damaged_latest_checkpoint_and_stale_temp_files(reference, tmp_path, capsys):
    """As a crash mid-write could leave it: the newest checkpoint truncated, temporary files about,
    metric rows and an episode logged after the older checkpoint. The rerun falls back with one
    warning and ends as the uninterrupted run."""
    demos, ref = reference
    run = tmp_path / "damaged"
    shutil.copytree(ref, run)
    (run / "final.json").unlink()
    (run / "model.safetensors").unlink()
    newest = sorted((run / "checkpoints").glob("step_*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    stale = [run / "checkpoints" / ".step_000000200.pt.x1y2", run / ".model.safetensors.abc",
             run / "episodes" / ".ep000009-30.npz.k3j4", run / "episodes" / "tmpq8w7.npz"]
    for path in stale:
        path.write_bytes(b"half a file")
    capsys.readouterr()
    assert main([*ARGS, "--demos", str(demos), "--run-dir", str(run)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and newest.name in warnings[0] and "unreadable" in warnings[0]
    assert not any(p.exists() for p in stale)
    assert (run / "checkpoints" / (newest.name + ".corrupt")).exists()  # set aside for inspection
    _assert_same_run(run, ref)


def test_source_commit_names_the_commit_and_marks_a_dirty_tree(tmp_path):
    from cmil.runs import source_commit

    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f.txt").write_text("a")
    subprocess.run([*git, "add", "f.txt"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "c"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tmp_path, capture_output=True, text=True,
                          check=True).stdout.strip()
    assert source_commit(tmp_path) == head
    (tmp_path / "f.txt").write_text("b")
    assert source_commit(tmp_path) == f"{head}-dirty"
