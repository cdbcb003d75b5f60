"""Learning benchmark (issue 4): BC, VMAIL and CMIL on the default task, same demos, same env-step budget.

    python benchmarks/compare_methods.py [--methods bc vmail cmil] [--seeds 0 1 2] [--parallel 2]
                                         [--root runs/compare] [--set env_steps=10000 ...]

Each (method, seed) is an ordinary `cmil train` run directory under ROOT (rerunning skips finished
runs and resumes unfinished ones), run as a subprocess, `--parallel` at a time, each with
`--threads` torch threads. At the end `cmil plot` writes the learning curves (mean over seeds with
a 95% bootstrap band) and prints the table of final success rates with 95% bootstrap CIs.
This script needs no Ray (`cmil sweep` does the same on a Ray cluster).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cmil.config import PRESETS
from cmil.plot import report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default=PRESETS["default"].task)
    parser.add_argument("--methods", nargs="+", default=["bc", "vmail", "cmil"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--demos", default=None, help="demo directory (default: demos/{task})")
    parser.add_argument("--root", default="runs/compare")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="config override for every run, e.g. --set env_steps=5000")
    args = parser.parse_args()
    demos = args.demos or f"demos/{args.task}"
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    overrides = [x for kv in args.set for x in (f"--{kv.split('=', 1)[0].replace('_', '-')}", kv.split("=", 1)[1])]

    def run(method: str, seed: int) -> tuple[str, int, float]:
        run_dir = root / f"{args.task}__{method}__seed{seed}"
        cmd = [sys.executable, "-m", "cmil.cli", "train", "--method", method, "--task", args.task, "--seed", str(seed),
               "--demos", demos, "--run-dir", str(run_dir), "--threads", str(args.threads), "--device", args.device,
               *overrides]
        start = time.time()
        with open(root / f"{run_dir.name}.log", "w") as log:
            code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        return run_dir.name, code, time.time() - start

    start = time.time()
    jobs = [(m, s) for m in args.methods for s in args.seeds]
    with ThreadPoolExecutor(args.parallel) as pool:
        for name, code, wall in pool.map(lambda job: run(*job), jobs):
            print(f"{'ok    ' if code == 0 else 'FAILED'} {name} ({wall:.0f} s)", flush=True)
    print(f"all runs: {time.time() - start:.0f} s")
    report([root / f"{args.task}__{m}__seed{s}" for m, s in jobs
                      if (root / f"{args.task}__{m}__seed{s}" / "metrics.jsonl").exists()], root / "summary")
    print((root / "summary" / "results.md").read_text())
    print(f"plots: {root / 'summary'}")


if __name__ == "__main__":
    main()
