"""Which way the RL part of CMIL's actor gradient points, by parameter group (issue 9, round 8).

    python benchmarks/actor_grad_split.py RUN [RUN ...] [--updates 30] [--demos DIR] [--out JSON]
                                          [--set agent.actor_objective=q ...]

`train/actor_grad_cos` (logged by every CMIL run) is the cosine of the RL part and the beta-weighted BC part of the
actor's whole gradient. This splits it: the actor's last layer has one row per action mean and one per action std,
so the cosine over the mean rows says whether the imagined objective moves the mean actions towards the expert's
(positive: the same way as BC) or away from them (negative); the std rows and the hidden layers are reported beside,
and so is where a small step down each part moves the mean actions on the demos' states.
Each run's last checkpoint is replayed through `--updates` CMIL updates on its own demos and online episodes, with
the actor's optimiser step replaced by the measurement (the actor does not move; the world model, discriminator
and critics update as in training, so the measurement sees the run's own moving parts). `--set` changes the run's
config for the measurement only, e.g. `agent.actor_objective=q` (the critics' action slope alone) or `agent.alpha=0`,
to see which part of the objective makes the direction.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from cmil.config import replace
from cmil.config_io import load_config
from cmil.data.episodes import load_episodes
from cmil.data.replay import SequenceReplay
from cmil.methods.cmil import CMIL
from cmil.runs import source_commit
from diagnose_cmil import _restore_agent, episodes_features


def grad_split(agent: CMIL, rl_loss: torch.Tensor, bc_loss: torch.Tensor,
               sums: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """Cosines of the RL and beta * BC gradients over the last layer's mean rows, its std rows, the hidden layers
    and all parameters; the two parts' norms over the mean rows. Adds each part's gradient to `sums`."""
    params = list(agent.actor.parameters())
    rl = torch.autograd.grad(rl_loss, params, retain_graph=True, allow_unused=True)
    bc = torch.autograd.grad(agent.cfg.agent.beta * bc_loss, params, retain_graph=True, allow_unused=True)
    rl, bc = ([torch.zeros_like(p) if g is None else g for g, p in zip(gs, params, strict=True)] for gs in (rl, bc))
    for name, grads in (("rl", rl), ("bc", bc)):
        sums[name] = grads if name not in sums else [a + b for a, b in zip(sums[name], grads, strict=True)]
    last = agent.actor.net[-1]
    head = {i for i, p in enumerate(params) if p is last.weight or p is last.bias}
    A = last.out_features // 2      # the actor's output: A means, then A stds

    def rows(grads, part):
        return torch.cat([grads[i][part].flatten() for i in sorted(head)])

    def cos(a, b):
        return float(F.cosine_similarity(a, b, dim=0, eps=1e-12))

    def flat(grads, keep):
        return torch.cat([g.flatten() for i, g in enumerate(grads) if keep(i)])

    means, stds = slice(0, A), slice(A, 2 * A)
    return {"cos_mean_rows": cos(rows(rl, means), rows(bc, means)), "cos_std_rows": cos(rows(rl, stds), rows(bc, stds)),
            "cos_hidden": cos(flat(rl, lambda i: i not in head), flat(bc, lambda i: i not in head)),
            "cos_all": cos(flat(rl, lambda i: True), flat(bc, lambda i: True)),
            "rl_norm_mean_rows": float(rows(rl, means).norm()), "bc_norm_mean_rows": float(rows(bc, means).norm())}


def measure(run: Path, demos: Path | None, updates: int, sets: dict | None = None) -> dict:
    cfg = replace(load_config(run / "config.yaml"), **(sets or {}))
    demo_eps = load_episodes(demos or Path(cfg.demos), cfg.image_size, limit=cfg.num_demos)
    action_dim = demo_eps[0]["action"].shape[-1]
    checkpoint = sorted((run / "checkpoints").glob("step_*.pt"))[-1]
    agent = _restore_agent(run, checkpoint, action_dim, cfg)
    torch.manual_seed(0)
    expert = SequenceReplay(cfg.seq_len, seed=0, cover_edges=cfg.cover_edges)
    replay = SequenceReplay(cfg.seq_len, seed=1, cover_edges=cfg.cover_edges)
    for ep in demo_eps:
        expert.add_episode(ep)
    for ep in load_episodes(run / "episodes", cfg.image_size, action_dim):
        replay.add_episode(ep)
    samples: list[dict[str, float]] = []
    sums: dict[str, list[torch.Tensor]] = {}
    agent._actor_step = lambda rl_loss, bc_loss: samples.append(grad_split(agent, rl_loss, bc_loss, sums)) or {}
    for _ in range(updates):
        agent.update(expert, replay)
    return {"run": str(run), "checkpoint": checkpoint.name, "updates": updates, "set": sets or {},
            **{k: float(np.mean([s[k] for s in samples])) for k in samples[0]},
            **action_push(agent, demo_eps, sums)}


@torch.no_grad()
def action_push(agent: CMIL, episodes: list[dict], sums: dict[str, list[torch.Tensor]], step: float = 0.01) -> dict:
    """Where each part moves the mean actions: the change of the actor's mean action on the demos' states, per action
    dimension, after a step of `step` (in parameter norm) down each part's summed gradient, and that change's
    cosine with the direction from the actor's mean action to the expert's."""
    feat, expert, _ = episodes_features(agent, episodes)
    mean = agent.actor(feat).mean
    out = {}
    for name, grads in sums.items():
        moved = copy.deepcopy(agent.actor)
        norm = torch.sqrt(sum(g.square().sum() for g in grads)).clamp_min(1e-12)
        for p, g in zip(moved.parameters(), grads, strict=True):
            p -= step * g / norm
        change = moved(feat).mean - mean
        out[f"push_{name}_per_dim"] = change.mean(0).tolist()
        out[f"push_{name}_cos_to_expert"] = float(F.cosine_similarity(change.flatten(), (expert - mean).flatten(), dim=0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--updates", type=int, default=30, help="updates to average over, per run")
    parser.add_argument("--demos", type=Path, default=None, help="the runs' demos (default: each run's config)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="config change for the measurement, e.g. agent.actor_objective=q")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/diagnose/actor_grad_split.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    sets = {key: yaml.safe_load(value) for key, value in (kv.split("=", 1) for kv in args.set)}
    rows = []
    for run in args.runs:
        rows.append(measure(run, args.demos, args.updates, sets))
        print(f"{run.name}: cosine RL vs BC, mean rows {rows[-1]['cos_mean_rows']:+.3f}, std rows "
              f"{rows[-1]['cos_std_rows']:+.3f}, hidden {rows[-1]['cos_hidden']:+.3f}, all {rows[-1]['cos_all']:+.3f}; "
              f"norm over the mean rows RL {rows[-1]['rl_norm_mean_rows']:.2f}, BC {rows[-1]['bc_norm_mean_rows']:.2f}",
              flush=True)
        print("    mean-action change per dim after a step down each part: RL "
              + " ".join(f"{x:+.3f}" for x in rows[-1]["push_rl_per_dim"]) + ", BC "
              + " ".join(f"{x:+.3f}" for x in rows[-1]["push_bc_per_dim"])
              + f"; cosine with the way to the expert's actions RL {rows[-1]['push_rl_cos_to_expert']:+.2f}, "
              f"BC {rows[-1]['push_bc_cos_to_expert']:+.2f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"commit": source_commit(), "runs": rows}, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
