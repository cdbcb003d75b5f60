"""Foundation benchmark (issue 2): expert success, pixel-BC success over seeds, env steps per second.

    python benchmarks/foundation.py [--task TASK] [--expert-episodes 50] [--seeds 0 1 2] [--eval-episodes 20]

Prints the expert's success rate over N episodes, BC's success rate over `--eval-episodes` evaluation
episodes for each seed (trained from 10 demos with the `default` preset's BC settings), and the env's
steps per second with rendering (random actions, one process).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from cmil.config import replace
from cmil.data.collect import collect_demos
from cmil.envs import make_env
from cmil.launch import train
from cmil.presets import PRESETS


def env_steps_per_second(task: str, steps: int = 500) -> float:
    env = make_env(task, seed=0)
    try:
        env.reset()
        start = time.perf_counter()
        for _ in range(steps):
            _, _, term, trunc, _ = env.step(env.action_space.sample())
            if term or trunc:
                env.reset()
        return steps / (time.perf_counter() - start)
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default=PRESETS["default"].task)
    parser.add_argument("--expert-episodes", type=int, default=50)
    parser.add_argument("--demos", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="BC seeds (none: skip BC)")
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--out", default=None, help="where demos and runs go (default: a temp dir)")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="cmil-bench-"))

    sps = env_steps_per_second(args.task)
    print(f"[{args.task}] env steps/s with rendering: {sps:.1f}")

    t0 = time.time()
    stats = collect_demos(args.task, args.expert_episodes, root / "expert", seed=500_000, keep_failures=True,
                          quiet=True)
    print(f"[{args.task}] expert success: {stats['successes']}/{stats['attempts']} = {stats['success_rate']:.3f}"
          f" ({time.time() - t0:.0f}s)")

    demos = root / "demos"
    if not demos.exists():
        collect_demos(args.task, args.demos, demos, seed=1_000_000, quiet=True)
    results = []
    for seed in args.seeds:
        cfg = replace(PRESETS["default"], task=args.task, method="bc", seed=seed, demos=str(demos),
                      num_demos=args.demos, final_eval_episodes=args.eval_episodes, video_episodes=0)
        t0 = time.time()
        res = train(cfg, root / f"bc_seed{seed}", quiet=True)
        results.append(res["success_rate"])
        print(f"[{args.task}] BC seed {seed}: success {res['success_rate']:.2f} over {args.eval_episodes} episodes"
              f" ({time.time() - t0:.0f}s)")
    print(json.dumps({"task": args.task, "env_steps_per_s": round(sps, 1), "expert_success": stats["success_rate"],
                      "expert_episodes": stats["attempts"], "bc_success_per_seed": results,
                      "bc_success_mean": float(np.mean(results)) if results else None}))


if __name__ == "__main__":
    main()
