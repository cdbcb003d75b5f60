"""Paper-task benchmark (issue 5): expert success, env speed with rendering, cost of collecting demos.

    python benchmarks/paper_tasks.py --tasks kitchen baoding --episodes 20 [--seed 0] [--out DIR] [--json FILE]
    python benchmarks/paper_tasks.py --kitchen-compare docs/img/kitchen_compare.png

For each task (any name registered in `cmil.envs`), the task's expert plays `--episodes` seeded
episodes in the task's own env (rendering every frame); each episode is recorded with
`EpisodeRecorder` and written with `save_episode` (to `--out`, or a temporary directory deleted
afterwards). Printed per task:
  success     fraction of episodes in which `info["success"]` held at some step
  subtasks    mean of the final `info["tasks_completed"]` (tasks that report it, e.g. kitchen)
  steps/s     env steps per second, `env.step` alone (physics + rendering)
  s/demo      wall-clock seconds per demo collected: reset, expert, env steps, recording, saving
A task whose env or expert cannot be imported (not written yet) is reported as skipped.
Timings depend on the machine's load; the CPU here is shared, so treat them as rough.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from cmil.data.episodes import EpisodeRecorder, save_episode  # noqa: E402
from cmil.envs import make_env  # noqa: E402
from cmil.experts import make_expert  # noqa: E402

PAPER_KITCHEN_DEMOS = Path("/work/shared/data/paper-kitchen-demos")


def bench_task(task: str, episodes: int, seed: int, out: Path) -> dict:
    """Roll out the task's expert for `episodes` episodes, recording and saving each one."""
    env = make_env(task, seed=seed)
    try:
        expert = make_expert(task, env)
        successes, subtasks, lengths = [], [], []
        step_time, steps, demo_times = 0.0, 0, []
        for i in range(episodes):
            start = time.perf_counter()
            rec = EpisodeRecorder()
            obs, info = env.reset(seed=seed + i)
            expert.reset()
            rec.reset(obs, info)
            success = bool(info.get("success", False))
            done = False
            while not done:
                action = expert.act()
                t0 = time.perf_counter()
                obs, reward, terminated, truncated, info = env.step(action)
                step_time += time.perf_counter() - t0
                steps += 1
                rec.step(action, obs, reward, info, terminated)
                success = success or bool(info.get("success", False))
                done = terminated or truncated
            ep = rec.finish()
            save_episode(out / task, ep)
            demo_times.append(time.perf_counter() - start)
            successes.append(success)
            lengths.append(len(ep["action"]) - 1)
            if "tasks_completed" in info:
                subtasks.append(info["tasks_completed"])
            print(f"  {task} episode {i}: success={success} length={lengths[-1]}"
                  + (f" subtasks={subtasks[-1]}" if subtasks else ""), file=sys.stderr, flush=True)
    finally:
        env.close()
    result = {
        "task": task, "episodes": episodes, "success_rate": float(np.mean(successes)),
        "mean_length": float(np.mean(lengths)), "env_steps_per_s": steps / step_time,
        "s_per_demo": float(np.mean(demo_times)),
    }
    if subtasks:
        result["mean_subtasks"] = float(np.mean(subtasks))
        result["subtask_counts"] = {str(k): int(np.sum(np.array(subtasks) == k)) for k in range(5)}
    return result


def kitchen_compare(png: Path, demo_dir: Path = PAPER_KITCHEN_DEMOS, step: int = 200) -> None:
    """Our kitchen frames (first frame and frame `step` of an expert episode) beside the paper's demo's."""
    import imageio.v3 as iio

    from cmil.data.episodes import episode_paths

    demo = np.load(episode_paths(demo_dir)[0])["image"]
    if demo.shape[1] == 128:  # the paper's 128x128 frames: take every second pixel, as its code does
        demo = demo[:, ::2, ::2]
    env = make_env("kitchen", seed=0)
    try:
        expert = make_expert("kitchen", env)
        obs, _ = env.reset(seed=0)
        expert.reset()
        ours = [obs]
        for _ in range(step):
            ours.append(env.step(expert.act())[0])
    finally:
        env.close()
    gap = np.full((64, 4, 3), 255, np.uint8)
    rows = [np.concatenate([ours[t], gap, demo[t]], 1) for t in (0, step)]
    grid = np.concatenate([rows[0], np.full((4, rows[0].shape[1], 3), 255, np.uint8), rows[1]], 0)
    grid = np.kron(grid, np.ones((4, 4, 1), np.uint8))  # nearest-neighbour x4 for viewing
    png.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(png, grid)
    print(f"wrote {png}: left ours, right the paper's demo; top frame 0, bottom frame {step}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["kitchen", "baoding"])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="episode i is reset with seed + i")
    parser.add_argument("--out", type=Path, default=None, help="keep the demos here (default: a temporary dir)")
    parser.add_argument("--json", type=Path, default=None, help="append one JSON line per task here")
    parser.add_argument("--kitchen-compare", type=Path, default=None,
                        help="only write the side-by-side kitchen image to this PNG")
    args = parser.parse_args()
    if args.kitchen_compare is not None:
        kitchen_compare(args.kitchen_compare)
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        for task in args.tasks:
            try:
                result = bench_task(task, args.episodes, args.seed, out)
            except (ImportError, AttributeError, KeyError) as exc:  # env or expert not there (yet)
                result = {"task": task, "skipped": f"{type(exc).__name__}: {exc}"}
            line = json.dumps(result)
            print(line, flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(line + "\n")
            if "skipped" not in result:
                extra = f"  mean subtasks {result['mean_subtasks']:.2f}" if "mean_subtasks" in result else ""
                print(f"{task}: expert success {result['success_rate']:.0%} over {args.episodes} episodes{extra}; "
                      f"{result['env_steps_per_s']:.1f} env steps/s with rendering; "
                      f"{result['s_per_demo']:.1f} s per demo collected", flush=True)


if __name__ == "__main__":
    main()
