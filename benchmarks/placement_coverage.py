"""Which placements a task's policies solve, and how far each lies from the demonstrations (issue 9, round 32).

    python benchmarks/placement_coverage.py runs/r32/bc_s100 runs/r30/def_s100 ... --demos demos/mw-push \\
        [--episodes 100 --seed 30000] [--json J] [--plot P.png]

Reads each run's saved evaluation on the placements seeded `--seed`, `--seed`+1, ... (`cmil eval RUN --episodes N
--seed S` keeps every episode's success), resets the runs' task at the same seeds to read where the object and the
goal start (Meta-World's `info['state']`: object at [4:7], goal at [36:39]), and reads the same from the demos' first
frames. Prints how often two runs end alike placement by placement (against the rate their success rates would give
if their outcomes were independent), the share of placements every run solves and that none does, and how the
fraction of runs solving a placement relates to its object's and goal's distance from the nearest demo's. Meta-World
tasks only (the state layout above).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from cmil.config_io import load_config
from cmil.data.episodes import load_episodes
from cmil.envs import make_env
from cmil.launch import eval_result_path
from cmil.runs import source_commit, write_json

OBJECT, GOAL = slice(4, 6), slice(36, 38)   # x, y of the object and of the goal in Meta-World's 39-d state


def saved_successes(run: Path, episodes: int, seed: int) -> np.ndarray:
    path = eval_result_path(run, episodes, seed)
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `cmil eval {run} --episodes {episodes} --seed {seed}` first")
    saved = json.loads(path.read_text())
    if "episodes" not in saved:
        raise SystemExit(f"{path} has no per-episode record (saved before cmil eval kept one): evaluate it again")
    return np.array([ep["success"] for ep in saved["episodes"]], bool)


def start_states(task: str, seeds: range) -> np.ndarray:
    """Meta-World's state at reset for each placement seed (N, 39)."""
    env = make_env(task, seed=seeds[0])
    try:
        return np.stack([env.reset(seed=s)[1]["state"] for s in seeds])
    finally:
        env.close()


def nearest_distance(points: np.ndarray, demos: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points[:, None] - demos[None], axis=-1).min(1)


def correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson's r, None where either side is constant (no spread to correlate)."""
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else None


def coverage(outcomes: dict[str, np.ndarray], fresh: np.ndarray, demos: np.ndarray) -> dict:
    """Agreement between the runs and how the placements' success relates to their distance from the demos."""
    names = list(outcomes)
    pairs = []
    for a, b in itertools.combinations(names, 2):
        p, q = outcomes[a].mean(), outcomes[b].mean()
        pairs.append({"runs": [a, b], "same_outcome": float((outcomes[a] == outcomes[b]).mean()),
                      "if_independent": float(p * q + (1 - p) * (1 - q))})
    solved = np.stack(list(outcomes.values())).mean(0)          # fraction of runs solving each placement
    out = {"runs": {n: float(o.mean()) for n, o in outcomes.items()}, "pairs": pairs,
           "mean_same_outcome": float(np.mean([p["same_outcome"] for p in pairs])) if pairs else None,
           "mean_if_independent": float(np.mean([p["if_independent"] for p in pairs])) if pairs else None,
           "solved_by_all": float((solved == 1).mean()), "solved_by_none": float((solved == 0).mean())}
    # Each run's success on the placements whose object starts nearer / farther than the median from the demos':
    # a policy that carries the demos further shows it on the far half.
    distance = {name: nearest_distance(fresh[:, cols], demos[:, cols]) for name, cols in (("object", OBJECT),
                                                                                          ("goal", GOAL))}
    far = distance["object"] > np.median(distance["object"])
    out["runs_near_far"] = {n: {"near": float(o[~far].mean()), "far": float(o[far].mean())} for n, o in outcomes.items()}
    for name, cols in (("object", OBJECT), ("goal", GOAL)):
        dist = distance[name]
        out[f"{name}_to_nearest_demo"] = {
            "corr_with_solved_fraction": correlation(dist, solved),
            "mean_where_none_solve": float(dist[solved == 0].mean()) if (solved == 0).any() else None,
            "mean_where_all_solve": float(dist[solved == 1].mean()) if (solved == 1).any() else None}
        for axis, col in zip("xy", range(cols.start, cols.stop), strict=True):
            out[f"{name}_{axis}_corr_with_solved_fraction"] = correlation(fresh[:, col], solved)
    out["placements"] = [{"object_xy": fresh[i, OBJECT].round(4).tolist(), "goal_xy": fresh[i, GOAL].round(4).tolist(),
                          "solved_fraction": float(solved[i])} for i in range(len(fresh))]
    out["demos"] = [{"object_xy": d[OBJECT].round(4).tolist(), "goal_xy": d[GOAL].round(4).tolist()} for d in demos]
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy = np.array([p["object_xy"] for p in result["placements"]])
    solved = np.array([p["solved_fraction"] for p in result["placements"]])
    demo = np.array([d["object_xy"] for d in result["demos"]])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=solved, cmap="viridis", vmin=0, vmax=1, s=28)
    ax.scatter(demo[:, 0], demo[:, 1], marker="x", c="red", s=60, label="demo object starts")
    fig.colorbar(sc, ax=ax, label=f"fraction of the {len(result['runs'])} runs that succeed")
    ax.set_xlabel("object x at reset")
    ax.set_ylabel("object y at reset")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("Fresh placements: who solves them, and where the demos are", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--demos", type=Path, required=True, help="the demos the runs were trained on")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=30_000, help="the first placement seed of the saved evaluation")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    tasks = {load_config(run / "config.yaml").task for run in args.runs}
    if len(tasks) != 1:
        raise SystemExit(f"the runs are on different tasks: {sorted(tasks)}")
    task = tasks.pop()
    outcomes = {str(run): saved_successes(run, args.episodes, args.seed) for run in args.runs}
    fresh = start_states(task, range(args.seed, args.seed + args.episodes))
    demos = np.stack([ep["state"][0] for ep in load_episodes(args.demos)])
    result = {"commit": source_commit(), "task": task, "episodes": args.episodes, "seed": args.seed,
              "demos": str(args.demos)} | coverage(outcomes, fresh, demos)
    for name, rate in result["runs"].items():
        split = result["runs_near_far"][name]
        print(f"{name}: success {rate:.2f} (object nearer than the median to a demo's: {split['near']:.2f}; "
              f"farther: {split['far']:.2f})")
    if result["pairs"]:
        print(f"placement by placement, two runs end alike on {result['mean_same_outcome']:.2f} of the placements "
              f"(independent outcomes at these rates: {result['mean_if_independent']:.2f})")
    print(f"solved by every run: {result['solved_by_all']:.2f}; by none: {result['solved_by_none']:.2f}")
    for name in ("object", "goal"):
        d = result[f"{name}_to_nearest_demo"]
        none, every = d["mean_where_none_solve"], d["mean_where_all_solve"]
        print(f"{name}'s distance to the nearest demo's: corr with the fraction solving "
              f"{show(d['corr_with_solved_fraction'])} (mean {show(none)} where none solve, {show(every)} where all do); "
              f"corr with x {show(result[f'{name}_x_corr_with_solved_fraction'])}, "
              f"y {show(result[f'{name}_y_corr_with_solved_fraction'])}")
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    if args.plot:
        plot(result, args.plot)
        print(f"wrote {args.plot}")


def show(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


if __name__ == "__main__":
    main()
