"""What pulls CMIL's representation, loss term by loss term (issue 9, round 11).

    python benchmarks/representation_grads.py CHECKPOINT... --run RUN --demos DIR [--batches 4] [--out JSON]

The representation is the path from an image to the agent's features (the encoder and the posterior layers,
`WorldModel.representation_parameters`). The world-model step trains it on expert windows and on the run's own
replay windows by reconstruction and KL, and (with agent.bc_model_weight) by the BC loss on the expert windows.
For each checkpoint this prints, averaged over `--batches` batches of the run's batch shape (same seed for
every checkpoint):
  - the norm of each term's gradient on the representation (expert/recon, expert/kl, expert/bc, replay/recon,
    replay/kl), with the weights the run trains them with;
  - each term's cosine with the BC term's gradient, and the cosine of all model terms together with it.
A model gradient as large as the BC term's and at a cosine near 0 moves the features in directions the actor's
BC fit does not hold in place. The replay holds the run's episodes up to the checkpoint's env step (its last
`--replay-episodes`), as the run's replay did then, minus what the run had not saved.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from cmil.data.episodes import episode_paths, load_episode, load_episodes
from cmil.data.replay import SequenceReplay, batch_to_torch
from cmil.launch import load_config
from cmil.methods.cmil import CMIL
from cmil.runs import source_commit
from diagnose_cmil import _restore_agent


def checkpoint_env_step(path: Path) -> int:
    """step_000030000.pt -> 30000."""
    return int(path.stem.split("_")[-1])


def term_gradients(agent: CMIL, expert: SequenceReplay, replay: SequenceReplay, batches: int
                   ) -> dict[str, torch.Tensor]:
    """Mean gradient of each loss term on the representation's parameters, flattened."""
    wm, cfg = agent.wm, agent.cfg
    params = wm.representation_parameters()
    grads: dict[str, torch.Tensor] = {}
    for _ in range(batches):
        for source, buffer in (("expert", expert), ("replay", replay)):
            batch = batch_to_torch(buffer.sample(cfg.batch_size), agent.device)
            terms, post, _ = wm.loss_terms(batch)
            if source == "expert" and cfg.agent.bc_model_weight:
                bc = agent.bc_loss(wm.agent_feat(post)[:, :-1], batch["action"][:, 1:], shaping=True)
                terms["bc"] = cfg.agent.bc_model_weight * bc
            for name, loss in terms.items():
                g = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
                flat = torch.cat([(x if x is not None else torch.zeros_like(p)).flatten() for x, p in zip(g, params, strict=True)])
                key = f"{source}/{name}"
                grads[key] = grads.get(key, 0) + flat / batches
    return grads


def summarise(grads: dict[str, torch.Tensor]) -> dict[str, float]:
    row = {f"norm {k}": round(g.norm().item(), 3) for k, g in grads.items()}
    bc = grads.get("expert/bc")
    if bc is not None:
        model = {k: g for k, g in grads.items() if k != "expert/bc"}
        for k, g in model.items():
            row[f"cos {k}, bc"] = round(torch.cosine_similarity(g, bc, 0).item(), 3)
        model_sum = sum(model.values())
        row["cos model, bc"] = round(torch.cosine_similarity(model_sum, bc, 0).item(), 3)
        row["norm model"] = round(model_sum.norm().item(), 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--run", type=Path, required=True, help="the run the checkpoints belong to")
    parser.add_argument("--demos", type=Path, required=True, help="the demos the run was trained on")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--replay-episodes", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.run / "config.yaml")
    demos = load_episodes(args.demos, cfg.image_size, limit=cfg.num_demos)
    action_dim = demos[0]["action"].shape[-1]
    paths = episode_paths(args.run / "episodes")
    episode_len = len(demos[0]["action"]) - 1
    rows = []
    for checkpoint in args.checkpoints:
        agent = _restore_agent(args.run, checkpoint, action_dim, cfg)
        expert = SequenceReplay(cfg.seq_len, seed=cfg.seed, cover_edges=cfg.cover_edges)
        for ep in demos:
            expert.add_episode(ep)
        # The run's episodes up to the checkpoint (at least the seed episodes), its last --replay-episodes.
        seen = max(cfg.seed_steps, checkpoint_env_step(checkpoint)) // max(episode_len, 1)
        replay = SequenceReplay(cfg.seq_len, seed=cfg.seed)
        for path in paths[max(0, seen - args.replay_episodes):max(seen, 1)]:
            replay.add_episode(load_episode(path, cfg.image_size, action_dim))
        torch.manual_seed(0)
        row = {"checkpoint": checkpoint.name, "replay_episodes": len(replay.episodes),
               **summarise(term_gradients(agent, expert, replay, args.batches))}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"run": str(args.run), "commit": source_commit(), "batches": args.batches,
                                        "rows": rows}, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
