"""Every bad input to every subcommand: exit status 2, one line `error: ...` naming the problem on
stderr (nothing else), and the file system exactly as it was, so that the corrected command just works."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cmil.cli import main
from cmil.data.collect import collect_demos
from cmil.data.episodes import load_episodes, save_episode

NEW = "{base}/newrun"
# A dry-run `train` on the point task, into a fresh run directory; each case adds one mistake.
TRAIN = ["train", "--task", "point", "--method", "bc", "--dry-run", "--demos", "{demos}", "--run-dir", NEW]
# The command that made the finished run {run}: a resume with one flag changed.
RESUME = ["train", "--task", "point", "--method", "bc", "--dry-run", "--demos", "{demos}", "--run-dir", "{run}"]
SWEEP = ["sweep", "--tasks", "point", "--methods", "bc", "--dry-run", "--root", "{base}/sweep", "--no-plot"]

CASES = [
    # --- train: config values (checked when the config is resolved) ---
    ("batch-size-0", [*TRAIN, "--batch-size", "0"], "batch_size must be >= 1"),
    ("batch-size-not-int", [*TRAIN, "--batch-size", "abc"], "--batch-size"),
    ("env-steps-negative", [*TRAIN, "--env-steps", "-1"], "env_steps must be >= 0"),
    ("seq-len-0", [*TRAIN, "--seq-len", "0"], "seq_len must be >= 1"),
    ("num-demos-0", [*TRAIN, "--num-demos", "0"], "num_demos must be >= 1"),
    ("keep-checkpoints-0", [*TRAIN, "--keep-checkpoints", "0"], "keep_checkpoints must be >= 1"),
    ("image-size-tiny", [*TRAIN, "--image-size", "4"], "image_size must be >= 46"),
    ("image-size-cmil", [*TRAIN[:4], "cmil", *TRAIN[5:], "--image-size", "96"], "image_size must be 64 for cmil"),
    ("device-unknown", [*TRAIN, "--device", "tpu"], "device must be one of"),
    ("threads-negative", [*TRAIN, "--threads", "-1"], "threads must be >= 0"),
    ("seed-negative", [*TRAIN, "--seed", "-3"], "seed must be >= 0"),
    ("wm-ensemble-0", [*TRAIN, "--wm.ensemble", "0"], "wm.ensemble must be >= 1"),
    ("gamma-above-1", [*TRAIN, "--agent.gamma", "1.5"], "agent.gamma must be in [0, 1]"),
    ("gamma-nan", [*TRAIN, "--agent.gamma", "nan"], "agent.gamma must be finite"),
    ("actor-lr-0", [*TRAIN, "--agent.actor-lr", "0"], "agent.actor_lr must be > 0"),
    ("disc-grad-penalty-negative", [*TRAIN, "--agent.disc-grad-penalty", "-1"], "agent.disc_grad_penalty must be >= 0"),
    ("disc-policy-pairs-unknown", [*TRAIN, "--agent.disc-policy-pairs", "real"], "--agent.disc-policy-pairs"),
    ("bc-steps-0", [*TRAIN, "--bc.steps", "0"], "bc.steps must be >= 1"),
    ("imag-starts-with-real-critic", [*TRAIN, "--agent.imag-starts", "4"], "agent.imag_starts"),
    ("bc-frame-shift-filter", [*TRAIN, "--agent.bc-frame-shift", "--wm.posterior", "filter"],
     "agent.bc_frame_shift needs wm.posterior 'image'"),
    ("empty-run-dir", [*TRAIN, "--run-dir", ""], "run_dir must not be empty"),
    # a field the method fixes (presets.METHOD_OVERRIDES) is refused, not silently replaced
    ("vmail-with-alpha", [*TRAIN[:4], "vmail", *TRAIN[5:], "--agent.alpha", "1"],
     "agent.alpha=1.0 conflicts with --method vmail, which sets agent.alpha=0.0"),
    ("vmail-frozen", [*TRAIN[:4], "vmail", *TRAIN[5:], "--wm.freeze-representation"],
     "wm.freeze_representation=True conflicts with --method vmail"),
    ("unknown-method", [*TRAIN, "--method", "xx"], "'--method'"),
    ("unknown-task", [*TRAIN, "--task", "nope"], "unknown task 'nope'"),
    ("unknown-flag", [*TRAIN, "--nope", "1"], "--nope"),
    ("missing-value", [*TRAIN, "--agent.alpha"], "--agent.alpha"),
    ("unknown-preset", [*TRAIN, "--preset", "nope"], "--preset"),
    # --- train: demos, the env and the run directory (checked before anything is written) ---
    ("demos-missing", [*TRAIN, "--demos", "{base}/missing"], "no demos at"),
    ("demos-too-few", [*TRAIN, "--num-demos", "5"], "fewer than num_demos 5"),
    ("demos-a-file", [*TRAIN, "--demos", "{file}"], "not a directory"),
    ("demos-corrupt", [*TRAIN, "--demos", "{bad_demos}", "--num-demos", "1"], "cannot read"),
    ("demos-wrong-action-dim", [*TRAIN, "--demos", "{wide_demos}"], "action dimension is 3, expected 2"),
    ("demos-wrong-image-size", [*TRAIN, "--image-size", "48"], "image size is 64x64, expected 48x48"),
    ("run-dir-a-file", [*TRAIN, "--run-dir", "{file}"], "is not a directory"),
    ("run-dir-not-a-run", [*TRAIN, "--run-dir", "{stuff}"], "is not a run (no config.yaml)"),
    ("run-dir-broken-config", [*TRAIN, "--run-dir", "{broken_run}"], "config.yaml: cannot read"),
    ("run-dir-unknown-field", [*TRAIN, "--run-dir", "{odd_run}"], "unknown config fields ['agent.nope']"),
    ("episodes-without-checkpoints", [*RESUME[:-1], "{nockpt_run}"], "no checkpoints/"),
    ("init-from-no-checkpoint", [*TRAIN, "--init-from", "{stuff}"], "no checkpoint to initialise from"),
    ("init-from-other-method", [*TRAIN[:4], "dac", *TRAIN[5:], "--init-from", "{run}"], "does not fit"),
    # --- train: resuming with other learning settings ---
    ("resume-other-method", [*RESUME[:4], "cmil", *RESUME[5:]], "method: run has 'bc', command asks 'cmil'"),
    ("resume-other-seed", [*RESUME, "--seed", "3"], "seed: run has 0, command asks 3"),
    ("resume-other-bc-lr", [*RESUME, "--bc.lr", "0.1"], "bc.lr: run has 0.0003, command asks 0.1"),
    ("resume-other-demos", [*RESUME[:7], "{wide_demos}", *RESUME[8:]], "demos: run has"),
    # --- eval ---
    ("eval-missing-run", ["eval", "{base}/missing"], "is not a run directory"),
    ("eval-not-a-run", ["eval", "{demos}"], "is not a run directory"),
    ("eval-no-checkpoint", ["eval", "{nockpt_run}"], "no readable checkpoint"),
    ("eval-episodes-0", ["eval", "{run}", "--episodes", "0"], "--episodes must be >= 1"),
    ("eval-video-negative", ["eval", "{run}", "--video-episodes", "-1"], "--video-episodes must be >= 0"),
    ("eval-episodes-not-int", ["eval", "{run}", "--episodes", "x"], "invalid int value"),
    ("eval-no-run", ["eval"], "the following arguments are required"),
    # --- demos ---
    ("collect-unknown-task", ["demos", "collect", "--task", "nope", "--out", "{base}/d"], "unknown task"),
    ("collect-episodes-0", ["demos", "collect", "--task", "point", "--episodes", "0", "--out", "{base}/d"],
     "--episodes must be >= 1"),
    ("collect-image-size", ["demos", "collect", "--task", "point", "--image-size", "8", "--out", "{base}/d"],
     "--image-size must be >= 46"),
    ("collect-into-demos", ["demos", "collect", "--task", "point", "--out", "{demos}"], "is not empty"),
    ("collect-into-file", ["demos", "collect", "--task", "point", "--out", "{file}"], "is not a directory"),
    ("collect-no-task", ["demos", "collect", "--out", "{base}/d"], "--task"),
    ("import-missing", ["demos", "import", "{base}/missing", "--out", "{base}/i"], "not a directory"),
    ("import-into-demos", ["demos", "import", "{demos}", "--out", "{demos}"], "already holds episodes"),
    ("import-corrupt", ["demos", "import", "{bad_demos}", "--out", "{base}/i"], "cannot read"),
    ("import-action-dim-0", ["demos", "import", "{demos}", "--out", "{base}/i", "--action-dim", "0"],
     "--action-dim must be >= 1"),
    ("show-missing", ["demos", "show", "{base}/missing"], "not a directory"),
    ("show-corrupt", ["demos", "show", "{bad_demos}"], "cannot read"),
    ("show-sheet-nowhere", ["demos", "show", "{demos}", "--sheet", "{base}/nodir/x.png"], "--sheet"),
    ("demos-no-subcommand", ["demos"], "required"),
    # --- model, plot, sweep, the command itself ---
    ("model-missing-demos", ["model", "--demos", "{base}/missing", "--out", "{base}/m"], "not a directory"),
    ("model-updates-0", ["model", "--demos", "{demos}", "--out", "{base}/m", "--updates", "0"],
     "--updates must be >= 1"),
    ("model-earlier-fit", ["model", "--demos", "{demos}", "--out", "{fit}", "--updates", "1"], "earlier fit"),
    ("model-window-too-long", ["model", "--demos", "{demos}", "--out", "{base}/m", "--horizon", "100"],
     "--context + --horizon"),
    ("model-unknown-device", ["model", "--demos", "{demos}", "--out", "{base}/m", "--device", "tpu"], "--device"),
    ("plot-missing", ["plot", "{base}/missing", "--out", "{base}/p"], "no such run directory"),
    ("plot-no-runs", ["plot", "{demos}", "--out", "{base}/p"], "no run directories"),
    ("plot-out-a-file", ["plot", "{run}", "--out", "{file}"], "--out"),
    ("sweep-no-methods", ["sweep", "--tasks", "point", "--root", "{base}/sweep"], "give --tasks and --methods"),
    ("sweep-unknown-task", [*SWEEP[:2], "nope", *SWEEP[3:]], "unknown task 'nope'"),
    ("sweep-unknown-field", [*SWEEP, "--set", "agent.nope=1"], "unknown config fields"),
    ("sweep-bad-value", [*SWEEP, "--set", "batch_size=0"], "batch_size must be >= 1"),
    ("sweep-missing-grid", [*SWEEP, "--grid", "{base}/missing.yaml"], "missing.yaml"),
    ("sweep-bad-grid", [*SWEEP, "--grid", "{bad_grid}"], "unknown keys ['sedes']"),
    ("sweep-num-cpus-0", [*SWEEP, "--num-cpus", "0"], "--num-cpus must be > 0"),
    ("sweep-negative-seed", [*SWEEP, "--seeds", "-1"], "seed must be >= 0"),
    ("no-command", [], "required"),
    ("unknown-command", ["trian"], "invalid choice"),
    ("tasks-extra-argument", ["tasks", "extra"], "unrecognised arguments: extra"),
]
if not torch.cuda.is_available():
    CASES.append(("device-cuda-unavailable", [*TRAIN, "--device", "cuda"], "CUDA is not available"))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    """A folder with demos, a finished run and the damaged inputs the cases point at."""
    base = tmp_path_factory.mktemp("world")
    paths = {name: base / name for name in ("demos", "run", "stuff", "bad_demos", "wide_demos", "broken_run",
                                            "odd_run", "nockpt_run", "fit", "other_env_demos")}
    collect_demos("point", 2, paths["demos"], seed=0, quiet=True)
    fmt = {"base": str(base), **{k: str(v) for k, v in paths.items()}}
    assert main([arg.format(**fmt) for arg in RESUME]) == 0
    (base / "afile.txt").write_text("not a directory")
    (paths["stuff"] / "notes.txt").parent.mkdir()
    (paths["stuff"] / "notes.txt").write_text("mine")
    paths["bad_demos"].mkdir()
    (paths["bad_demos"] / "x.npz").write_bytes(b"not a zip file")
    for ep in load_episodes(paths["demos"]):
        save_episode(paths["wide_demos"], {**ep, "action": np.pad(ep["action"], ((0, 0), (0, 1)))})
    shutil.copytree(paths["demos"], paths["other_env_demos"])
    stats = paths["other_env_demos"] / "expert_stats.json"
    stats.write_text(json.dumps({**json.loads(stats.read_text()), "env_kwargs": {"placement_scale": 0.5}}))
    paths["broken_run"].mkdir()
    (paths["broken_run"] / "config.yaml").write_text("task: [unclosed\n")
    paths["odd_run"].mkdir()
    (paths["odd_run"] / "config.yaml").write_text("agent: {nope: 1}\n")
    shutil.copytree(paths["run"], paths["nockpt_run"])
    shutil.rmtree(paths["nockpt_run"] / "checkpoints")
    (paths["nockpt_run"] / "final.json").unlink()
    (paths["nockpt_run"] / "episodes").mkdir()
    shutil.copy(sorted(paths["demos"].glob("*.npz"))[0], paths["nockpt_run"] / "episodes" / "ep000000-30.npz")
    paths["fit"].mkdir()
    (paths["fit"] / "metrics.jsonl").write_text("")
    (base / "bad_grid.yaml").write_text("tasks: [point]\nsedes: [1]\n")
    return {**fmt, "file": str(base / "afile.txt"), "bad_grid": str(base / "bad_grid.yaml")}


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (-1, 0)
            for p in root.rglob("*")}


def test_there_are_enough_cases_and_each_subcommand_has_some():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)
    commands = {argv[0] if argv else "" for _, argv, _ in CASES}
    assert {"train", "eval", "demos", "model", "plot", "sweep"} <= commands


@pytest.mark.parametrize("argv,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(world, argv, expected, capsys, monkeypatch):
    if argv[:1] == ["sweep"]:
        pytest.importorskip("ray")
    base = Path(world["base"])
    monkeypatch.chdir(base)  # default outputs (runs/, plots/) would land here, and be noticed
    before = _tree(base)
    rc = main([arg.format(**world) for arg in argv])
    out, err = capsys.readouterr()
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0]
    assert out == ""
    assert _tree(base) == before


def test_demos_of_other_env_kwargs_are_named_in_a_warning(world, capsys, monkeypatch):
    monkeypatch.chdir(world["base"])
    argv = [a.format(**world) for a in TRAIN[:-1]] + [f"{world['base']}/otherenvrun", "--demos", world["other_env_demos"]]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert 'collected with env kwargs {"placement_scale": 0.5}, this run uses {}' in err


def test_the_installed_command_exits_2_with_one_line(tmp_path):
    """The same contract through the interpreter (exit status, and nothing else on stderr)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.run([sys.executable, "-m", "cmil.cli", "train", "--task", "point", "--batch-size", "0"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "error: batch_size must be >= 1, got 0\n" and proc.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_an_unexpected_error_keeps_its_traceback(monkeypatch):
    """A bug is not a usage error: it propagates (the interpreter prints the traceback, exit status 1)."""
    import cmil.cli

    def broken(_args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cmil.cli, "cmd_tasks", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["tasks"])
