"""Pretrained against final policy of the same run, on the same placements (issue 9, round 17).

    python benchmarks/anchor_probe.py RUN [RUN ...] [--episodes 100] [--seed 30000] [--out JSON]

A run trained with `agent.anchor_weight` keeps, in its checkpoints, a frozen copy of the actor that acted when
pretraining ended (`anchor_actor`). With `wm.freeze_representation` the features that actor reads are those of the
pretrained world model (the encoder and posterior layers never train online), so the anchor actor acting through
the run's final acting world model is the pretrained policy, and comparing it with the final policy on the same
placements, episode by episode, tells whether the online phase lowered the policy without the 20-episode
evaluations' noise: each placement is scored by both. Without the frozen representation the anchor actor reads
features that moved online, so the first column is not the pretrained policy; the script refuses such runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from cmil.evaluate import run_episode
from cmil.launch import open_policy
from cmil.models.latent_policy import LatentPolicy
from cmil.runs import source_commit, write_json


def successes(env, policy, episodes: int, seed: int) -> np.ndarray:
    """Per-placement success (deterministic actions) for placements seed .. seed + episodes - 1."""
    return np.array([run_episode(env, lambda o: policy.act(o, True), policy.reset, seed=seed + i).success
                     for i in range(episodes)], dtype=bool)


def probe(run: Path, episodes: int, seed: int) -> dict:
    parts = open_policy(run.resolve())
    try:
        method = parts.method
        if getattr(method, "anchor", None) is None or not parts.cfg.wm.freeze_representation:
            raise SystemExit(f"{run}: needs agent.anchor_weight > 0 and wm.freeze_representation (see the docstring)")
        final = parts.policy
        pretrained = LatentPolicy(final.wm, method.anchor, method.action_dim, method.device)
        start = time.time()
        pre, fin = successes(parts.env, pretrained, episodes, seed), successes(parts.env, final, episodes, seed)
    finally:
        parts.env.close()
    row = {"run": str(run), "checkpoint": parts.checkpoint.name, "pretrained": float(pre.mean()),
           "final": float(fin.mean()), "both": int((pre & fin).sum()), "only_pretrained": int((pre & ~fin).sum()),
           "only_final": int((~pre & fin).sum()), "neither": int((~pre & ~fin).sum()),
           "seconds": round(time.time() - start, 1)}
    print(f"{run.name}: pretrained {row['pretrained']:.2f}, final {row['final']:.2f} over {episodes} placements "
          f"(lost {row['only_pretrained']}, gained {row['only_final']})", flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=30_000, help="first placement (never the benchmark's 10000+)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = [probe(run, args.episodes, args.seed) for run in args.runs]
    summary = {"episodes": args.episodes, "seed": args.seed, "commit": source_commit(), "runs": rows,
               "mean_pretrained": float(np.mean([r["pretrained"] for r in rows])),
               "mean_final": float(np.mean([r["final"] for r in rows]))}
    print(f"mean over runs: pretrained {summary['mean_pretrained']:.3f}, final {summary['mean_final']:.3f}")
    if args.out:
        write_json(args.out, summary)


if __name__ == "__main__":
    main()
