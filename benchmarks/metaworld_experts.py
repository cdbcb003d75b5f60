"""Meta-World's scripted experts on every v3 task: success over 50 seeded episodes, steps to success.

For each task, the shipped scripted policy (`cmil.experts.metaworld_expert`) runs in cmil's own
Meta-World env (`MetaWorldImageEnv`: random placement drawn from the seeded generator) for seeds
0..N-1, each episode until its first success or `--cap` steps. Frames are not rendered
(`render=False`): the expert reads the state only and rendering does not touch the physics, so the
success flags are those of the pixel env (`--check-rendered K` re-runs the first K seeds of every
task with frames on and asserts the same steps to success).

From the steps to first success it derives each task's fixed episode length by the rule the first
12 tasks were given (docs/default_task.md): the smallest multiple of 50, at least 100, that is at
least 1.3x the slowest success; tasks already registered keep their length. The expert's success
rate reported for a task is the fraction of seeds that succeed within that episode length.

    OMP_NUM_THREADS=1 python benchmarks/metaworld_experts.py --out benchmarks/results/metaworld_experts.json
    python benchmarks/metaworld_experts.py --table benchmarks/results/metaworld_experts.json   # markdown
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from cmil.envs.metaworld_env import EPISODE_LENGTHS, MetaWorldImageEnv  # noqa: E402
from cmil.experts.metaworld_expert import MetaWorldExpert  # noqa: E402
from cmil.runs import source_commit  # noqa: E402


def first_successes(task: str, seeds: range, cap: int, render: bool = False) -> list[int | None]:
    """Steps to the first success of each seeded expert episode (None: no success within `cap`)."""
    env = MetaWorldImageEnv(task, episode_length=cap, render=render)
    expert = MetaWorldExpert(env)
    out: list[int | None] = []
    try:
        for seed in seeds:
            env.reset(seed=seed)
            expert.reset()
            first = None
            for t in range(1, cap + 1):
                _, _, _, _, info = env.step(expert.act())
                if info["success"]:
                    first = t
                    break
            out.append(first)
    finally:
        env.close()
    return out


def episode_length_for(task: str, firsts: list[int | None], cap: int) -> int:
    """The registered length if the task has one, else the smallest multiple of 50 (>= 100) that is
    >= 1.3x the slowest success (the cap if that is longer)."""
    if task in EPISODE_LENGTHS:
        return EPISODE_LENGTHS[task]
    ok = [f for f in firsts if f is not None]
    if not ok:
        return cap
    return min(cap, max(100, 50 * math.ceil(1.3 * max(ok) / 50)))


def summarize(task: str, firsts: list[int | None], cap: int) -> dict:
    length = episode_length_for(task, firsts, cap)
    ok = [f for f in firsts if f is not None]
    within = [f for f in ok if f <= length]
    return {"task": task, "episodes": len(firsts), "episode_length": length,
            "successes": len(within), "success_rate": len(within) / len(firsts),
            "successes_within_cap": len(ok),
            "steps_to_success_mean": round(float(np.mean(ok)), 1) if ok else None,
            "steps_to_success_max": int(max(ok)) if ok else None,
            "first_success": firsts}


def table(results: dict) -> str:
    lines = ["| task | expert success | episode length | steps to success (mean / max) |",
             "|---|---|---|---|"]
    for r in sorted(results["tasks"], key=lambda r: r["task"]):
        steps = (f"{r['steps_to_success_mean']} / {r['steps_to_success_max']}"
                 if r["steps_to_success_max"] is not None else "-")
        lines.append(f"| {r['task']} | {r['successes']}/{r['episodes']} = {r['success_rate']:.2f} "
                     f"| {r['episode_length']} | {steps} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=None, help="Meta-World names without -v3 (default: all 50)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--cap", type=int, default=500, help="longest episode measured")
    p.add_argument("--check-rendered", type=int, default=0,
                   help="re-run the first K seeds of each task with frames on; they must agree")
    p.add_argument("--out", default=None, help="write the JSON results here")
    p.add_argument("--table", default=None, help="print the markdown table of this results file and exit")
    args = p.parse_args(argv)
    if args.table:
        print(table(json.loads(open(args.table).read())))
        return
    tasks = args.tasks or sorted(t.removesuffix("-v3") for t in ALL_V3_ENVIRONMENTS)
    start = time.time()
    rows = []
    for task in tasks:
        t0 = time.time()
        firsts = first_successes(task, range(args.episodes), args.cap)
        if args.check_rendered:
            rendered = first_successes(task, range(args.check_rendered), args.cap, render=True)
            assert rendered == firsts[:args.check_rendered], (task, rendered, firsts[:args.check_rendered])
        row = summarize(task, firsts, args.cap)
        rows.append(row)
        print(f"{task:28s} {row['successes']:2d}/{row['episodes']} within {row['episode_length']} steps "
              f"(max {row['steps_to_success_max']}), {time.time() - t0:.0f} s", flush=True)
    results = {"benchmark": "metaworld_experts", "commit": source_commit(), "seeds": [0, args.episodes - 1],
               "cap": args.cap, "check_rendered": args.check_rendered,
               "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)", "python": sys.version.split()[0],
               "wall_time_s": round(time.time() - start, 1), "tasks": rows}
    if args.out:
        with open(args.out, "w") as f:
            f.write(json.dumps(results, indent=1) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
