"""Does a change keep CMIL's learning bit for bit? Short dry runs, one per option set, at a base commit and at the
working tree, compared by the saved model's bytes and every metrics row (less the wall clock).

A refactor's guard: each case switches on options whose code paths the `default` preset does not take, so that a
change to any branch of the update shows. The base runs from a temporary `git worktree` of REV with the same Python.

    python scripts/same_learning.py --base a1404a8            # every case (~2 min a side on an idle core)
    python scripts/same_learning.py --base HEAD~1 --cases default paper

Exit status 1 if any case differs or fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> extra `cmil train` flags (the dry run's `--preset` first).
CASES: dict[str, list[str]] = {
    "default": ["--preset", "default"],
    "paper": ["--preset", "paper"],
    "bc_filter": ["--preset", "default", "--agent.bc-filter", "policy", "--agent.bc-action-noise", "0.1",
                  "--agent.bc-feat-noise", "0.1", "--agent.bc-embed-weight", "1"],
    "weighted": ["--preset", "default", "--agent.actor-objective", "weighted"],
    "q_real": ["--preset", "default", "--agent.actor-objective", "q_real", "--agent.alpha", "0"],
    "no_action_grad": ["--preset", "default", "--agent.no-critic-action-grad", "--agent.disc-noise-std", "0",
                       "--agent.beta", "0"],
    "q_replay_starts": ["--preset", "default", "--agent.actor-objective", "q", "--agent.imag-from", "replay",
                        "--agent.imag-starts", "16", "--agent.no-real-critic-loss"],
    "anchor_filter": ["--preset", "default", "--agent.anchor-filter", "q", "--agent.disc-policy-pairs", "replay",
                      "--agent.disc-states", "prior"],
    "teacher_embed": ["--preset", "default", "--agent.teacher-embed-weight", "1", "--agent.bc-frame-shift"],
    "env_reward": ["--preset", "default", "--agent.reward", "env"],
    "self_imitation": ["--preset", "default", "--agent.self-imitation", "1", "--agent.self-imitation-windows", "2",
                       "--agent.self-imitation-every", "1"],
    "frozen_pretrained_anchor": ["--preset", "default", "--agent.anchor-target", "pretrained",
                                 "--wm.freeze-representation"],
}
_CLOCK_KEYS = ("wall_time",)


def fingerprint(run_dir: Path) -> dict[str, str]:
    """sha256 of the run's model.safetensors and of its metrics rows with the wall-clock fields dropped."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [json.dumps({k: v for k, v in row.items() if k not in _CLOCK_KEYS}, sort_keys=True) for row in rows]
    return {"model": hashlib.sha256((run_dir / "model.safetensors").read_bytes()).hexdigest(),
            "metrics": hashlib.sha256("\n".join(rows).encode()).hexdigest(), "rows": str(len(rows))}


def dry_run(src: Path, flags: list[str], run_dir: Path, demos: str, env_steps: int) -> dict[str, str] | str:
    """One dry run with `src` first on the import path: its fingerprint, or the error's last line."""
    env = {**os.environ, "PYTHONPATH": str(src), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    cmd = [sys.executable, "-m", "cmil.cli", "train", "--method", "cmil", "--task", "mw-push", "--dry-run",
           "--seed", "5", "--demos", demos, "--threads", "1", "--env-steps", str(env_steps), "--video-episodes", "0",
           "--run-dir", str(run_dir), *flags]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return lines[-1] if lines else f"exit {done.returncode}"
    return fingerprint(run_dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare the working tree with")
    parser.add_argument("--cases", nargs="*", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--demos", default="demos/mw-push", help="demos of mw-push (`cmil demos collect`)")
    parser.add_argument("--env-steps", type=int, default=300)
    args = parser.parse_args()
    demos = Path(args.demos)
    demos = (demos if demos.is_absolute() or demos.exists() else ROOT / demos).resolve()  # the runs start in ROOT
    if not demos.exists():
        parser.error(f"no demos at {args.demos}: cmil demos collect --task mw-push --episodes 10 --seed 1000000 "
                     f"--out {args.demos}")
    with tempfile.TemporaryDirectory(prefix="same_learning_") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base), args.base], cwd=ROOT, check=True)
        try:
            differ = 0
            for name in args.cases:
                old = dry_run(base / "src", CASES[name], Path(tmp) / f"{name}_base", str(demos), args.env_steps)
                new = dry_run(ROOT / "src", CASES[name], Path(tmp) / f"{name}_new", str(demos), args.env_steps)
                same = isinstance(old, dict) and old == new
                differ += not same
                shown = new["model"][:16] if isinstance(new, dict) else new
                print(f"{name:26s} {'same' if same else 'DIFFERENT':9s} {shown}"
                      + ("" if same else f"  (base: {old['model'][:16] if isinstance(old, dict) else old})"),
                      flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    print(f"{len(args.cases) - differ} of {len(args.cases)} cases learn the same as {args.base}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
