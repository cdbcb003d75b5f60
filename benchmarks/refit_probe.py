"""Is it the features or the actor? A fresh actor fitted by BC on a run's frozen world model (issue 9, round 10).

    python benchmarks/refit_probe.py CHECKPOINT [CHECKPOINT ...] --run RUN --demos DIR --heldout DIR
                                     [--updates 2000] [--episodes 40] [--refit-seeds 0] [--out JSON]

For each checkpoint of a CMIL run: the run's own acting policy (EMA weights where the run keeps them) over
`--episodes` episodes from placement 20000 on (never the benchmark's 10000+), and its action error on the held-out
expert episodes; then, for each `--refit-seeds` seed, the actor is re-initialised and trained by the run's own BC
loss alone for `--updates` updates on the demos' features under the checkpoint's world model, which stays frozen
(the run's batch shape and augmentation, its actor optimiser and its weight averaging), and the refitted policy is
evaluated on the same placements. A late checkpoint whose refitted actor acts as well as the pretrained one's
has features that still carry what BC needs, so an online erosion lies in the actor (the RL term or what BC on a
moving representation did to it); a refitted actor that also fails says the features lost it. The refit's
starting features are the run's live world model's; the acting world model is the same frozen one.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from cmil.data.episodes import load_episodes
from cmil.data.replay import SequenceReplay, batch_to_torch
from cmil.envs import make_env
from cmil.evaluate import demo_success_rate
from cmil.launch import load_config
from cmil.methods.cmil import ADAM_EPS, CMIL
from cmil.models.networks import random_shift
from cmil.models.optim import clipped_step, decoupled_adam
from cmil.runs import source_commit
from diagnose_cmil import _restore_agent, action_error, rollouts


@torch.no_grad()
def demo_features(agent: CMIL, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The agent's features of a demo batch's frames 0..L-2 as the BC term reads them in `CMIL._update` (one
    random shift per window under wm.augment), from the frozen world model, filtered from a zero state."""
    wm = agent.wm
    image = random_shift(batch["image"]) if wm.cfg.augment else batch["image"]
    post, _ = wm.observe(wm.encode(image), batch["action"], batch["is_first"])
    return wm.agent_feat(post)[:, :-1]


def refit_actor(agent: CMIL, expert: SequenceReplay, updates: int, seed: int) -> float:
    """Re-initialise the actor (and its optimiser and weight average) and train it by the BC loss alone on the
    frozen world model. Returns the last BC loss."""
    torch.manual_seed(seed)
    for module in agent.actor.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    a = agent.cfg.agent
    agent.actor_opt = decoupled_adam(agent.actor.parameters(), a.actor_lr, ADAM_EPS, a.weight_decay)
    if agent.policy_ema is not None:  # the next average copies the live weights (the frozen world model included)
        agent.policy_ema.n_averaged.zero_()
    agent.wm.requires_grad_(False)
    loss = float("nan")
    for _ in range(updates):
        batch = batch_to_torch(expert.sample(agent.cfg.batch_size), agent.device)
        bc = agent.bc_loss(demo_features(agent, batch), batch["action"][:, 1:])
        clipped_step(agent.actor_opt, bc, agent.actor.parameters(), a.grad_clip)
        if agent.policy_ema is not None:
            agent.policy_ema.update_parameters(agent._acting)
        loss = bc.item()
    return loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--run", type=Path, required=True, help="the run the checkpoints belong to (its config.yaml)")
    parser.add_argument("--demos", type=Path, required=True, help="the demos the run was trained on")
    parser.add_argument("--heldout", type=Path, required=True, help="held-out expert episodes")
    parser.add_argument("--updates", type=int, default=2000, help="BC updates of the refitted actor")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--refit-seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", type=Path, default=None, help="JSON of every row")
    args = parser.parse_args()
    torch.set_num_threads(1)
    heldout = load_episodes(args.heldout)
    action_dim = heldout[0]["action"].shape[-1]
    cfg = load_config(args.run / "config.yaml")   # every checkpoint is the same run's
    env = make_env(cfg.task, seed=cfg.seed, image_size=cfg.image_size)   # each rollout reseeds it per episode
    demos = load_episodes(args.demos, cfg.image_size, action_dim, limit=cfg.num_demos)
    rows, commit = [], source_commit()
    for checkpoint in args.checkpoints:
        agent = _restore_agent(args.run, checkpoint, action_dim, cfg)
        # A fresh demo replay per checkpoint: each refit draws the same batches whatever the checkpoints' order.
        expert = SequenceReplay(cfg.seq_len, seed=cfg.seed, cover_edges=cfg.cover_edges)
        for ep in demos:
            expert.add_episode(ep)
        start = time.time()
        row = {"checkpoint": checkpoint.name,
               "own_success": demo_success_rate(rollouts(env, agent, args.episodes, cfg.eval_deterministic)),
               "own_action_mse_heldout": action_error(agent, heldout), "refits": []}
        for seed in args.refit_seeds:
            loss = refit_actor(agent, expert, args.updates, seed)
            row["refits"].append({"seed": seed, "train_bc_loss": loss, "action_mse_heldout": action_error(agent, heldout),
                                  "success": demo_success_rate(rollouts(env, agent, args.episodes, cfg.eval_deterministic))})
        row["refit_success_mean"] = float(np.mean([r["success"] for r in row["refits"]]))
        row["wall_s"] = round(time.time() - start)
        rows.append(row)
        print(json.dumps(row), flush=True)
    env.close()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"run": str(args.run), "commit": commit, "updates": args.updates,
                                        "episodes": args.episodes, "rows": rows}, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
