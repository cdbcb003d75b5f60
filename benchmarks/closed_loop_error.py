"""Where a trained policy's actions leave the expert's, step by step: compounding error in closed loop
against the error on expert frames (issue 9: why two policies with the same held-out error act differently).

    python benchmarks/closed_loop_error.py RUN [RUN ...] [--heldout DEMOS_DIR] [--episodes 40]
                                           [--eval-seed 20000] [--bin 10] [--out FILE]

For each run (any method; its latest checkpoint, acting as `cmil eval` does, deterministically):
  - closed loop: the policy acts from the placements eval_seed, eval_seed + 1, ...; at every step the task's
    expert (which reads the simulator's state) is asked what it would do in the state the policy reached, and
    the squared difference per action dimension is recorded (a DAgger-style relabel, for diagnosis only);
  - teacher-forced (with --heldout): the policy's action on each frame of held-out expert episodes against the
    expert's recorded action, the policy's memory filled with the expert's frames.
Both are averaged in bins of --bin steps (over the episodes that reach the bin), beside the success rate and
the closed-loop error per action dimension. If both policies match the expert equally on expert frames but one
drifts faster in closed loop, what separates them is robustness to their own mistakes, not the fit.
Writes a JSON (default benchmarks/results/diagnose/closed_loop_error.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from cmil.data.episodes import load_episodes
from cmil.errors import UsageError
from cmil.experts import make_expert
from cmil.launch import open_policy
from cmil.runs import source_commit


def binned(errors: list[list[float]], width: int) -> list[float]:
    """Mean error per bin of `width` steps, over the episodes that reach each bin."""
    bins = max(-(-len(e) // width) for e in errors)
    return [round(float(np.mean([np.mean(e[b * width:(b + 1) * width]) for e in errors if len(e) > b * width])), 5)
            for b in range(bins)]


def closed_loop(parts, episodes: int, seed: int) -> tuple[list[list[float]], list[list[float]], list[bool]]:
    """Per-step mean and per-dimension squared error against the expert on the policy's own states; successes."""
    env, policy = parts.env, parts.policy
    expert = make_expert(parts.cfg.task, env)
    errors, per_dim, successes = [], [], []
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        policy.reset()
        expert.reset()
        errs, success = [], bool(info.get("success", False))
        while True:
            action = np.asarray(policy.act(obs, True), np.float64)
            sq = (action - np.asarray(expert.act(), np.float64)) ** 2
            errs.append(sq.mean())
            per_dim.append(sq)
            obs, _, terminated, truncated, info = env.step(action)
            success = success or bool(info.get("success", False))
            if terminated or truncated:
                break
        errors.append(errs)
        successes.append(success)
    return errors, per_dim, successes


@torch.no_grad()
def teacher_forced(policy, heldout: list[dict]) -> list[list[float]]:
    """Per-step squared error (mean over action dimensions) of the policy's action on expert frames (frame t ->
    action[t + 1])."""
    errors = []
    for ep in heldout:
        policy.reset()
        errors.append([float(((np.asarray(policy.act(ep["image"][t], True)) - ep["action"][t + 1]) ** 2).mean())
                       for t in range(len(ep["action"]) - 1)])
    return errors


def measure(run: Path, episodes: int, seed: int, width: int, heldout: list[dict] | None) -> dict:
    parts = open_policy(run)
    try:
        errors, per_dim, successes = closed_loop(parts, episodes, seed)
    finally:
        parts.env.close()
    row = {"run": str(run), "method": parts.cfg.method, "checkpoint": parts.checkpoint.name,
           "success": float(np.mean(successes)), "closed_loop_error": round(float(np.mean(np.concatenate(errors))), 5),
           "closed_loop_error_bins": binned(errors, width),
           "closed_loop_error_per_dim": np.round(np.mean(per_dim, 0), 5).tolist()}
    if heldout:
        forced = teacher_forced(parts.policy, heldout)
        row["teacher_forced_error"] = round(float(np.mean(np.concatenate(forced))), 5)
        row["teacher_forced_error_bins"] = binned(forced, width)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (cmil train --run-dir)")
    parser.add_argument("--heldout", type=Path, default=None, help="held-out expert episodes (a demos directory)")
    parser.add_argument("--episodes", type=int, default=40, help="closed-loop episodes per run")
    parser.add_argument("--eval-seed", type=int, default=20_000, help="placement seed of the first episode")
    parser.add_argument("--bin", type=int, default=10, help="steps per bin")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/diagnose/closed_loop_error.json"))
    args = parser.parse_args()
    if args.episodes < 1 or args.bin < 1:
        raise SystemExit("error: --episodes and --bin must be >= 1")
    torch.set_num_threads(args.threads)
    heldout = load_episodes(args.heldout) if args.heldout else None
    rows = []
    for run in args.runs:
        try:
            row = measure(run, args.episodes, args.eval_seed, args.bin, heldout)
        except UsageError as exc:
            raise SystemExit(f"error: {exc}") from None
        rows.append(row)
        forced = f", teacher-forced {row['teacher_forced_error']:.4f}" if heldout else ""
        print(f"{run}: {row['method']} success {row['success']:.3f}, closed-loop error {row['closed_loop_error']:.4f}"
              f"{forced}\n  closed loop per {args.bin} steps: {row['closed_loop_error_bins']}"
              + (f"\n  teacher-forced per {args.bin} steps: {row['teacher_forced_error_bins']}" if heldout else ""),
              flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"commit": source_commit(), "episodes": args.episodes, "eval_seed": args.eval_seed,
                                    "bin": args.bin, "heldout": str(args.heldout) if heldout else None,
                                    "runs": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
