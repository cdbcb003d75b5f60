"""How a long run's policy moved: its evaluations, its own training episodes' success per bin of env steps,
and the discriminator's outputs, for one or more run directories (issue 9's `long` runs, docs/results.md).

The evaluations (20 episodes each, deterministic policy) are few and noisy; the run's training episodes
(sampled actions, ~100 per 10K env steps) give a denser second curve of the same policy. Runs still in
progress are read as they stand (`final` is null until the run ends).

    python benchmarks/run_curves.py runs/long_default_s3 runs/long_freeze_s3 --bin 10000 \\
        --out benchmarks/results/diagnose/round13/long_runs_seed3.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from cmil.data.episodes import episode_length, episode_paths, episode_success, load_episode
from cmil.runs import read_metrics, source_commit, write_json

DISC = ("disc/expert_prob", "disc/policy_prob")


def training_success(run: Path, bin_size: int, min_episodes: int) -> list[dict[str, Any]]:
    """Success of the run's own (online) episodes per `bin_size` env steps, in the order they were collected; an
    episode counts in the bin where it ended (as docs/results.md's rounds 9-12 counted), and bins with fewer than
    `min_episodes` episodes (the last, unfinished one) are left out."""
    steps, bins = 0, {}
    for path in episode_paths(run / "episodes"):
        ep = load_episode(path)
        steps += episode_length(ep)
        bins.setdefault(steps // bin_size, []).append(float(episode_success(ep)))
    return [{"env_steps": [b * bin_size, (b + 1) * bin_size], "episodes": len(v), "success": float(np.mean(v))}
            for b, v in sorted(bins.items()) if len(v) >= min_episodes]


def summarize_run(run: Path, bin_size: int, min_episodes: int) -> dict[str, Any]:
    rows = read_metrics(run)
    evaluations = [[r["env_step"], r["eval/success_rate"]] for r in rows if "eval/success_rate" in r]
    disc = [[r["env_step"], r[DISC[0]], r[DISC[1]]] for r in rows if DISC[0] in r and DISC[1] in r]
    final_path = run / "final.json"
    final = json.loads(final_path.read_text())["success_rate"] if final_path.exists() else None
    best = max((s for _, s in evaluations), default=None)
    return {"evaluations": evaluations, "final": final, "best_evaluation": best,
            "final_over_best": None if final is None or not best else final / best,
            "saved_evaluations": saved_evaluations(run),
            "training_episode_success": training_success(run, bin_size, min_episodes),
            "disc_expert_policy_prob": disc}


def saved_evaluations(run: Path) -> dict[str, float]:
    """Success rate of every evaluation `cmil eval` saved in the run (RUN/eval/*.json, e.g. the final policy on 100
    fresh placements: eval_100ep_seed30000), by file name."""
    out = {}
    for path in sorted((run / "eval").glob("*.json")):
        rate = json.loads(path.read_text()).get("eval/success_rate")
        if rate is not None:
            out[path.stem] = rate
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories")
    parser.add_argument("--bin", type=int, default=10_000, help="env steps per bin of training episodes")
    parser.add_argument("--min-episodes", type=int, default=50, help="smallest bin reported")
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args()
    result = {"analysed_by": source_commit(), "runs": {}}
    for run in map(Path, args.runs):
        s = summarize_run(run, args.bin, args.min_episodes)
        result["runs"][str(run)] = s
        evals = " ".join(f"{step // 1000}K:{success:.2f}" for step, success in s["evaluations"])
        train = " ".join(f"{b['success']:.2f}" for b in s["training_episode_success"])
        saved = " ".join(f"{k}:{v:.2f}" for k, v in s["saved_evaluations"].items())
        print(f"{run}\n  evaluations  {evals}\n  final {s['final']}  best {s['best_evaluation']}  saved {saved}"
              f"\n  training episodes per {args.bin // 1000}K steps  {train}")
    if args.out:
        write_json(Path(args.out), result)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
