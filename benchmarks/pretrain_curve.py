"""How CMIL's latent BC policy improves during pretraining on the demos (issue 9), one recipe at a time.

    python benchmarks/pretrain_curve.py [--set wm.posterior=image ...] [--updates 2000] [--every 400]
                                        [--full 0] [--seed 100] [--name NAME]

Runs `--full` full CMIL updates, then `--updates` world-model + BC updates on the demos only (what
`pretrain_updates` / `pretrain_bc_updates` do), and every `--every` updates measures:
  - the policy's success over `--episodes` episodes (eval seeds 20000+, never the benchmark's 10000+), and
    with agent.policy_ema also the live weights' success on the same episode seeds;
  - its action error on held-out expert episodes, both on states filtered with the expert's actions
    and on states filtered with the actor's own actions (as in closed loop);
  - ridge-probe R^2 of the true hand, puck and goal positions from the agent's features (fit on the
    demos, scored on the held-out episodes; Meta-World's state layout);
  - the training BC loss and the reconstruction error.
Writes benchmarks/results/diagnose/curve_{name}.json. Held-out episodes as in diagnose_cmil.py.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from cmil.evaluate import demo_success_rate
from cmil.launch import load_bc_encoder
from cmil.methods.cmil import CMIL
from cmil.presets import PRESETS
from cmil.runs import source_commit
from diagnose_cmil import action_error, prepare, rollouts

# Indices of the true positions in Meta-World's 39-dim state: hand xyz, object xy, goal xy.
STATE_INDEX = {"hand": [0, 1, 2], "puck": [4, 5], "goal": [36, 37]}


@torch.no_grad()
def probe_r2(agent: CMIL, train: list[dict], test: list[dict], ridge: float = 10.0) -> dict:
    """R^2 on `test` of a ridge regression from standardised features to each true position."""
    if "state" not in train[0] or train[0]["state"].shape[-1] < 38:
        return {}

    def data(eps):
        feats = [agent.episode_features(ep)[0].cpu().numpy() for ep in eps]
        return np.concatenate(feats), np.concatenate([ep["state"][:-1] for ep in eps])

    x_train, s_train = data(train)
    x_test, s_test = data(test)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    out = {}
    for name, index in STATE_INDEX.items():
        y, y_test = s_train[:, index], s_test[:, index]
        w = np.linalg.solve(x_train.T @ x_train + ridge * np.eye(x_train.shape[1]), x_train.T @ (y - y.mean(0)))
        residual = ((x_test @ w + y.mean(0) - y_test) ** 2).sum()
        out[name] = round(float(1 - residual / ((y_test - y_test.mean(0)) ** 2).sum()), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--updates", type=int, default=2000, help="world-model + BC updates")
    parser.add_argument("--every", type=int, default=400, help="measure every this many updates")
    parser.add_argument("--full", type=int, default=0, help="full CMIL updates before them")
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--heldout", type=int, default=20, help="held-out expert episodes")
    parser.add_argument("--demos", default=None)
    parser.add_argument("--name", default=None)
    parser.add_argument("--out", default="benchmarks/results/diagnose")
    args = parser.parse_args()

    cfg, sets, name, env, demos, heldout, expert = prepare(args)
    actions = env.action_space.shape[0]
    agent = CMIL(cfg, actions, torch.device("cpu"))
    if cfg.encoder_from:  # as `cmil train` does for a new run
        load_bc_encoder(agent, Path(cfg.encoder_from), quiet=False)

    start, rows, commit = time.time(), [], source_commit()  # the code the curve was measured with
    for _ in range(args.full):
        agent.update(expert, expert)
    for step in range(1, args.updates + 1):
        metrics = agent.update(expert, expert, agent=False)
        if step % args.every:
            continue
        episodes = rollouts(env, agent, args.episodes, cfg.eval_deterministic)
        row = {"updates": step, "success": demo_success_rate(episodes),
               "action_mse_heldout": action_error(agent, heldout),
               "action_mse_heldout_acting": action_error(agent, heldout, acting=True),
               "probe_r2": probe_r2(agent, demos, heldout),
               "train_bc_loss": metrics["train/bc_loss"], "recon_mse": metrics["model/recon_mse"],
               "wall_s": round(time.time() - start)}
        if agent.policy_ema is not None:  # the same episodes with the live weights, for a paired comparison
            live = rollouts(env, agent, args.episodes, cfg.eval_deterministic, live=True)
            row["success_live"] = demo_success_rate(live)
        rows.append(row)
        print(json.dumps(row), flush=True)
    env.close()
    out = Path(args.out) / f"curve_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"name": name, "preset": args.preset, "overrides": sets, "seed": cfg.seed,
                               "commit": commit, "full_updates": args.full, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
