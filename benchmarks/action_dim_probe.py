"""What CMIL's discriminator and critics make of one action dimension, split by what the expert did (issue 9, round 9).

    python benchmarks/action_dim_probe.py CHECKPOINT [CHECKPOINT ...] --run RUN --heldout DIR
                                           [--dim 3] [--split 0.3] [--values 0 0.3 0.6] [--out JSON]

At held-out expert states (filtered with the expert's actions), the states are split by the expert's action in
dimension `--dim` (below / at or above `--split`: for Meta-World, dim 3 is the gripper, 0 open, 0.6 closed). In each
part, with the actor's mean action and only that dimension set to each of `--values`: D's mean logit and the critics'
mean min Q, then D's and Q's action slope per dimension at the actor's own action, and the actor's mean value of the
dimension. A critic whose Q rises with the dimension in both parts, where the expert uses a different value in each,
links the action to the value across states rather than within one; the actor's value of the dimension over a run's
checkpoints shows whether the actor follows it. Several checkpoints of one run (`--run` gives its config) make a
trend; docs/results.md round 9 has the numbers of the `default` preset.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from cmil.data.episodes import load_episodes
from cmil.runs import source_commit
from diagnose_cmil import _restore_agent, episodes_features


def probe(agent, feat: torch.Tensor, expert: torch.Tensor, dim: int, values: list[float]) -> dict:
    """D's logit and min Q with dimension `dim` of the actor's mean action set to each value; slopes at the mean."""
    with torch.no_grad():
        mean = agent.actor(feat).mean
    row = {"states": len(feat), "expert_value": float(expert[:, dim].mean()), "actor_value": float(mean[:, dim].mean())}
    for v in values:
        action = mean.clone()
        action[:, dim] = v
        with torch.no_grad():
            row[f"D_logit@{v:g}"] = float(agent.imitation.logit(feat, action).mean())
            row[f"Q@{v:g}"] = float(agent.critic(feat, action).min(0).values.mean())
    action = mean.clone().requires_grad_(True)
    for name, value in (("D", agent.imitation.logit(feat, action)), ("Q", agent.critic(feat, action).min(0).values)):
        slope, = torch.autograd.grad(value.sum(), action)
        row[f"{name}_slope_per_dim"] = slope.mean(0).tolist()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--run", type=Path, required=True, help="the run the checkpoints belong to (its config.yaml)")
    parser.add_argument("--heldout", type=Path, required=True, help="held-out expert episodes")
    parser.add_argument("--dim", type=int, default=3, help="action dimension (Meta-World: 3 = gripper)")
    parser.add_argument("--split", type=float, default=0.3, help="expert value that splits the states")
    parser.add_argument("--values", nargs="+", type=float, default=[0.0, 0.3, 0.6])
    parser.add_argument("--out", type=Path, default=None, help="JSON of every row")
    args = parser.parse_args()
    torch.set_num_threads(1)
    heldout = load_episodes(args.heldout)
    action_dim = heldout[0]["action"].shape[-1]
    if not 0 <= args.dim < action_dim:
        raise SystemExit(f"--dim {args.dim}: the actions have {action_dim} dimensions")
    rows = []
    for checkpoint in args.checkpoints:
        agent = _restore_agent(args.run, checkpoint, action_dim)
        feat, expert, _ = episodes_features(agent, heldout)
        row = {"checkpoint": str(checkpoint)}
        for side, mask in (("below", expert[:, args.dim] < args.split), ("above", expert[:, args.dim] >= args.split)):
            if mask.any():
                row[side] = probe(agent, feat[mask], expert[mask], args.dim, args.values)
        rows.append(row)
        print(f"== {checkpoint}")
        for side in ("below", "above"):
            if side in row:
                r = row[side]
                cells = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} " + " ".join(f"{x:+.2f}" for x in v)
                                  for k, v in r.items() if k != "states")
                print(f"  expert dim {args.dim} {'<' if side == 'below' else '>='} {args.split:g} ({r['states']} states): {cells}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"commit": source_commit(), "run": str(args.run), "dim": args.dim,
                                        "split": args.split, "rows": rows}, indent=2))
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
