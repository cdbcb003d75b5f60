"""The anchor's target against the final policy of the same run, on the same placements (issue 9, rounds 17, 24).

    python benchmarks/anchor_probe.py RUN [RUN ...] [--episodes 100] [--seed 30000] [--out JSON]

A run trained with `agent.anchor_weight` keeps, in its checkpoints, what its online actor was pulled towards:
- with `agent.anchor_target bc` (round 24) the pixel BC teacher (`anchor_teacher`), which is a policy of its own;
- with `agent.anchor_target pretrained` (round 17) a frozen copy of the actor that acted when pretraining ended
  (`anchor_actor`). With `wm.freeze_representation` the features that actor reads are those of the pretrained world
  model (the encoder and posterior layers never train online), so the anchor actor acting through the run's final
  acting world model is the pretrained policy. Without the frozen representation the anchor actor reads features
  that moved online, so it is not the pretrained policy; the script refuses such runs.
Comparing the reference (teacher or pretrained policy) with the final policy on the same placements, episode by
episode, tells what the online phase made of it without the 20-episode evaluations' noise: each placement is
scored by both.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from cmil.evaluate import run_episode
from cmil.launch import open_policy
from cmil.methods.base import StatelessPolicy
from cmil.models.latent_policy import LatentPolicy
from cmil.runs import source_commit, write_json


def successes(env, policy, episodes: int, seed: int) -> np.ndarray:
    """Per-placement success (deterministic actions) for placements seed .. seed + episodes - 1."""
    return np.array([run_episode(env, lambda o: policy.act(o, True), policy.reset, seed=seed + i).success
                     for i in range(episodes)], dtype=bool)


def reference_policy(parts) -> tuple[str, object]:
    """('teacher', the pixel BC teacher) or ('pretrained', the anchor actor through the frozen world model)."""
    method = parts.method
    if getattr(method, "teacher", None) is not None:
        return "teacher", StatelessPolicy(lambda image, _deterministic: method.teacher(image), method.device)
    if getattr(method, "anchor", None) is None or not parts.cfg.wm.freeze_representation:
        raise SystemExit("needs agent.anchor_weight > 0 with agent.anchor_target 'bc', or with 'pretrained' and "
                         "wm.freeze_representation (see the docstring)")
    return "pretrained", LatentPolicy(parts.policy.wm, method.anchor, method.action_dim, method.device)


def probe(run: Path, episodes: int, seed: int) -> dict:
    parts = open_policy(run.resolve())
    try:
        kind, reference = reference_policy(parts)
        start = time.time()
        ref, fin = successes(parts.env, reference, episodes, seed), successes(parts.env, parts.policy, episodes, seed)
    finally:
        parts.env.close()
    row = {"run": str(run), "checkpoint": parts.checkpoint.name, "reference": kind, kind: float(ref.mean()),
           "final": float(fin.mean()), "both": int((ref & fin).sum()), f"only_{kind}": int((ref & ~fin).sum()),
           "only_final": int((~ref & fin).sum()), "neither": int((~ref & ~fin).sum()),
           "seconds": round(time.time() - start, 1)}
    print(f"{run.name}: {kind} {row[kind]:.2f}, final {row['final']:.2f} over {episodes} placements "
          f"(lost {row[f'only_{kind}']}, gained {row['only_final']})", flush=True)
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
               "mean_final": float(np.mean([r["final"] for r in rows]))}
    for kind in sorted({r["reference"] for r in rows}):
        summary[f"mean_{kind}"] = float(np.mean([r[kind] for r in rows if r["reference"] == kind]))
    print("mean over runs: " + ", ".join(f"{k.removeprefix('mean_')} {v:.3f}" for k, v in summary.items()
                                         if k.startswith("mean_")))
    if args.out:
        write_json(args.out, summary)


if __name__ == "__main__":
    main()
