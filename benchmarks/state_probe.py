"""Does a CMIL run's representation track the hand, the puck and the goal at the policy's own states? (issue 9, round 23)

    python benchmarks/state_probe.py RUN [RUN ...] [--steps 3000] [--out JSON]

`pretrain_curve.py` probes the agent's features for the true positions on held-out *expert* episodes. The online
phase acts, imagines and scores rewards at the states the policy itself reaches, so this probe asks the same there:
for each run (its latest checkpoint) the features of its stored episodes (`RUN/episodes`: the seed episodes and the
online ones; Meta-World's 39-dim state is stored beside each frame) and of its demos, and the R^2 of a regression
from those features to each true position (hand xyz, puck xy, goal xy) and to the puck's xy relative to the hand and
to the goal:
  - `demos_to_online`: fit on the demos, scored on the run's even-numbered episodes (how far the demos' reading
    carries to the policy's states);
  - `with_online`: fit on the demos and the odd-numbered episodes, scored on the even ones (what the features hold
    there at all, given examples of those states);
  - `demos_cross`: fit on the first half of the demos, scored on the second (the expert's states, as
    `pretrain_curve.py`'s probe).
Each with a ridge regression and with a 2 x 256 MLP (standardised inputs and targets, Adam 1e-3, `--steps` steps of
256 rows). Prints a table and writes a JSON (default benchmarks/results/diagnose/state_probe.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from cmil.data.episodes import load_episodes
from cmil.launch import open_policy
from cmil.runs import source_commit
from pretrain_curve import STATE_INDEX

# What is probed, from Meta-World's 39-dim state: the positions, and the puck relative to the hand and to the goal
# (xy), which is what pushing needs and what the task's reward is a function of.
TARGETS = {name: (lambda s, index=index: s[:, index]) for name, index in STATE_INDEX.items()} | {
    "puck_from_hand": lambda s: s[:, STATE_INDEX["puck"]] - s[:, STATE_INDEX["hand"][:2]],
    "puck_from_goal": lambda s: s[:, STATE_INDEX["puck"]] - s[:, STATE_INDEX["goal"]]}


def ridge_r2(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
             ridge: float = 10.0) -> float:
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mean) / std, (x_test - mean) / std
    w = torch.linalg.solve(a.T @ a + ridge * torch.eye(a.shape[1], dtype=a.dtype), a.T @ (y_train - y_train.mean(0)))
    return _r2(b @ w + y_train.mean(0), y_test)


def fit_mlp(x_train: torch.Tensor, y_train: torch.Tensor, steps: int, seed: int = 0):
    """A 2 x 256 ELU MLP regressing y (N, D) on x (N, F), standardised inputs and targets, Adam 1e-3, `steps`
    steps of 256 rows. Returns its prediction function (in y's units)."""
    x_mean, x_std = x_train.mean(0), x_train.std(0) + 1e-2
    y_mean, y_std = y_train.mean(0), y_train.std(0) + 1e-6
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x_train.shape[1], 256), torch.nn.ELU(), torch.nn.Linear(256, 256),
                              torch.nn.ELU(), torch.nn.Linear(256, y_train.shape[1]))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(steps):
        idx = torch.randint(len(x_train), (256,))
        loss = (net((x_train[idx] - x_mean) / x_std) - (y_train[idx] - y_mean) / y_std).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    @torch.no_grad()
    def predict(x: torch.Tensor) -> torch.Tensor:
        return net((x - x_mean) / x_std) * y_std + y_mean

    return predict


def mlp_r2(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
           steps: int, seed: int = 0) -> float:
    return _r2(fit_mlp(x_train, y_train, steps, seed)(x_test), y_test)


def _r2(pred: torch.Tensor, true: torch.Tensor) -> float:
    return round(float(1 - ((pred - true) ** 2).sum() / ((true - true.mean(0)) ** 2).sum()), 3)


def features_and_states(agent, episodes: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """The agent's features of frames 0..T-1 of every episode and the true states there, stacked."""
    with torch.no_grad():
        feats = torch.cat([agent.episode_features(ep)[0] for ep in episodes]).float()
    states = torch.as_tensor(np.concatenate([ep["state"][:-1] for ep in episodes])).float()
    return feats, states


def measure(run: Path, steps: int) -> dict:
    parts = open_policy(run)
    agent, cfg = parts.method, parts.cfg
    parts.env.close()
    online = load_episodes(run / "episodes")
    demos = load_episodes(Path(cfg.demos))
    if "state" not in online[0] or online[0]["state"].shape[-1] < 38:
        raise SystemExit(f"{run}: its episodes store no Meta-World state to probe against")
    x_demo, s_demo = features_and_states(agent, demos)
    x_even, s_even = features_and_states(agent, online[0::2])
    x_odd, s_odd = features_and_states(agent, online[1::2])
    half = sum(len(ep["state"]) - 1 for ep in demos[: len(demos) // 2])
    splits = {"demos_to_online": (x_demo, s_demo, x_even, s_even),
              "with_online": (torch.cat([x_demo, x_odd]), torch.cat([s_demo, s_odd]), x_even, s_even),
              "demos_cross": (x_demo[:half], s_demo[:half], x_demo[half:], s_demo[half:])}
    row: dict = {"run": str(run), "episodes": len(online)}
    for split, (xa, sa, xb, sb) in splits.items():
        for name, target in TARGETS.items():
            row.setdefault(split, {})[name] = {"ridge": ridge_r2(xa, target(sa), xb, target(sb)),
                                               "mlp": mlp_r2(xa, target(sa), xb, target(sb), steps)}
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--steps", type=int, default=3000, help="training steps of each MLP probe")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/diagnose/state_probe.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for run in args.runs:
        row = measure(run, args.steps)
        rows.append(row)
        print(f"{run} ({row['episodes']} episodes): R^2 ridge / MLP")
        for split in ("demos_to_online", "with_online", "demos_cross"):
            cells = "  ".join(f"{name} {row[split][name]['ridge']:+.2f} / {row[split][name]['mlp']:+.2f}"
                              for name in TARGETS)
            print(f"  {split:16s} {cells}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"commit": source_commit(), "steps": args.steps, "rows": rows}, indent=1))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
