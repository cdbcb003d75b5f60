"""Can a discriminator tell which of the policy's own online episodes succeeded? (issue 9, round 22)

    python benchmarks/self_imitation_probe.py RUN [RUN ...] [--last 10] [--folds 2] [--out JSON]

The online phase of a CMIL run plays ~80 episodes with the policy itself, and ~30-50% of them succeed. No method
sees the success flag, but if the imitation signal ranks the successful episodes above the failed ones, those
episodes are extra demonstrations of the task that cost nothing (self-imitation). For each run (its latest
checkpoint) and its stored online episodes (`RUN/episodes`, seed episodes included), every episode is scored by:
  - `run_D`: the run's own discriminator logit, averaged over the episode's real (posterior feature, action) pairs;
  - `run_D_last`: the same over the last `--last` pairs (where the puck has or has not reached the goal), and
    `run_D_last_zero_action` with the actions zeroed (what D makes of the end states alone);
  - `fresh_D` / `fresh_D_last`: a new discriminator on the run's frozen features (demo pairs = 1, online pairs = 0;
    no input noise, standardised inputs), cross-fitted: trained on the other folds' episodes, scored on its own;
  - `fresh_D_state_last`: the same, state-only (the feature alone), last pairs;
  - `fresh_end_state_D`: a state-only fresh D trained on the demos' last states against the policy episodes' last
    states only (an end-state, goal-like discriminator), cross-fitted the same way;
  - for a run trained with the `agent.reward env` measurement (round 23): `run_reward_head`, the head's predicted
    return of the episode, and the head's fit (R^2 against the task's reward) on the online episodes and the demos.
Also, for every run, `fresh_reward_r2`: how well a new MLP on the run's frozen (feature, action) pairs predicts the
task's reward on online episodes it did not see (trained on the demos and the other folds' episodes): whether the
representation holds what the task's reward depends on at the policy's own states.
Printed per score: the ROC AUC of score vs the episode's success, the success rate of the top quarter and top half
of the episodes by score against all episodes', and the mean score of the successful and of the failed episodes
(beside the run's D on the demos' own last pairs). Writes a JSON (default
benchmarks/results/diagnose/self_imitation_probe.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from cmil.data.episodes import episode_success, load_episodes
from cmil.launch import open_policy
from cmil.runs import source_commit
from diagnose_cmil import train_fresh_disc
from state_probe import fit_mlp


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties half (Mann-Whitney U)."""
    pos, neg = score[label], score[~label]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def top_success(score: np.ndarray, label: np.ndarray, fraction: float) -> float:
    k = max(1, int(round(fraction * len(score))))
    return float(label[np.argsort(-score)[:k]].mean())


def pairs(agent, episodes: list[dict]) -> list[torch.Tensor]:
    """Each episode's (feature, action taken there) rows, (T, F + A)."""
    out = []
    for ep in episodes:
        feat, action, _ = agent.episode_features(ep)
        out.append(torch.cat([feat, action], -1))
    return out


def fresh_scores(exp_rows: torch.Tensor, pol_rows: list[torch.Tensor], feat_dim: int, units: int, folds: int,
                 last: int, state_only: bool, steps: int, train_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fitted fresh-D scores per episode: mean logit over all rows and over the last `last` rows. With
    `train_last` D trains on the policy episodes' last `last` rows only (`exp_rows` then holds the demos' last rows)."""
    n = len(pol_rows)
    fold = np.arange(n) % folds
    whole, tail = np.zeros(n), np.zeros(n)
    cut = feat_dim if state_only else None
    for f in range(folds):
        train = torch.cat([pol_rows[i][-last:] if train_last else pol_rows[i] for i in range(n) if fold[i] != f])
        disc, mean, std = train_fresh_disc(exp_rows[:, :cut], train[:, :cut], feat_dim, units, noise=0.0, steps=steps)
        with torch.no_grad():
            for i in np.flatnonzero(fold == f):
                x = (pol_rows[i][:, :cut] - mean) / std
                logit = disc(x[:, :feat_dim], x[:, feat_dim:])
                whole[i], tail[i] = float(logit.mean()), float(logit[-last:].mean())
    return whole, tail


def fresh_reward_r2(demo_rows: list[torch.Tensor], pol_rows: list[torch.Tensor], demos: list[dict],
                    online: list[dict], folds: int, steps: int) -> float:
    """Held-out R^2 of a new MLP (`state_probe.fit_mlp`) regressing the task's reward on (feature, action) rows,
    cross-fitted over folds of the online episodes (the demos always in training); pooled over every fold's
    held-out rows."""
    demo_rows, pol_rows = [r.detach() for r in demo_rows], [r.detach() for r in pol_rows]
    reward = [torch.as_tensor(ep["reward"][1:]).float()[:, None] for ep in online]
    demo_x = torch.cat(demo_rows)
    demo_y = torch.cat([torch.as_tensor(ep["reward"][1:]).float()[:, None] for ep in demos])
    fold = np.arange(len(pol_rows)) % folds
    preds, trues = [], []
    for f in range(folds):
        train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        predict = fit_mlp(torch.cat([demo_x] + [pol_rows[i] for i in train]),
                          torch.cat([demo_y] + [reward[i] for i in train]), steps, seed=f)
        preds += [predict(pol_rows[i]) for i in test]
        trues += [reward[i] for i in test]
    pred, true = torch.cat(preds), torch.cat(trues)
    return 1 - float(((pred - true) ** 2).mean()) / float(true.var(unbiased=False))


def measure(run: Path, last: int, folds: int, steps: int) -> dict:
    parts = open_policy(run)
    agent, cfg = parts.method, parts.cfg
    parts.env.close()
    online = load_episodes(run / "episodes")
    demos = load_episodes(Path(cfg.demos))
    success = np.array([episode_success(ep) for ep in online], bool)
    torch.manual_seed(0)
    pol_rows = pairs(agent, online)
    demo_rows = pairs(agent, demos)
    exp_rows = torch.cat(demo_rows)
    feat_dim = agent.wm.agent_feat_dim
    scores = {}
    with torch.no_grad():
        own = [agent.imitation.logit(r[:, :feat_dim], r[:, feat_dim:]) for r in pol_rows]
        # The state's part alone: the same end states with zero actions.
        own_zero = [agent.imitation.logit(r[-last:, :feat_dim], torch.zeros_like(r[-last:, feat_dim:])) for r in pol_rows]
        demo_own = [agent.imitation.logit(r[:, :feat_dim], r[:, feat_dim:]) for r in demo_rows]
    scores["run_D"] = np.array([float(x.mean()) for x in own])
    scores["run_D_last"] = np.array([float(x[-last:].mean()) for x in own])
    scores["run_D_last_zero_action"] = np.array([float(x.mean()) for x in own_zero])
    # Where the demos' own episodes fall on the run's D (the expert side it was trained on), last pairs.
    demo_last = float(np.mean([float(x[-last:].mean()) for x in demo_own]))
    units = cfg.agent.disc_units
    scores["fresh_D"], scores["fresh_D_last"] = fresh_scores(exp_rows, pol_rows, feat_dim, units, folds, last,
                                                             state_only=False, steps=steps)
    _, scores["fresh_D_state_last"] = fresh_scores(exp_rows, pol_rows, feat_dim, units, folds, last,
                                                   state_only=True, steps=steps)
    # An end-state D: the demos' last states against the policy episodes' last states, nothing else.
    _, scores["fresh_end_state_D"] = fresh_scores(torch.cat([r[-last:] for r in demo_rows]), pol_rows, feat_dim,
                                                  units, folds, last, state_only=True, steps=steps, train_last=True)
    row = {"run": str(run), "episodes": len(online), "success_rate": float(success.mean()),
           "run_D_last_demos": round(demo_last, 3), "scores": {}}
    if agent.imitation.head is not None:  # the task's reward as the run's head learnt it (agent.reward env)
        with torch.no_grad():
            heads = {"online": [agent.imitation.reward(r[:, :feat_dim], r[:, feat_dim:], None) for r in pol_rows],
                     "demos": [agent.imitation.reward(r[:, :feat_dim], r[:, feat_dim:], None) for r in demo_rows]}
        for name, eps in (("online", online), ("demos", demos)):
            true = np.concatenate([ep["reward"][1:] for ep in eps])
            pred = torch.cat(heads[name]).numpy()
            row[f"reward_head_r2_{name}"] = round(1 - float(((pred - true) ** 2).mean()) / float(true.var()), 3)
        scores["run_reward_head"] = np.array([float(x.sum()) for x in heads["online"]])
    row["fresh_reward_r2"] = round(fresh_reward_r2(demo_rows, pol_rows, demos, online, folds, 4 * steps), 3)
    for name, s in scores.items():
        row["scores"][name] = {"auc": round(roc_auc(s, success), 3), "top25_success": round(top_success(s, success, 0.25), 3),
                               "top50_success": round(top_success(s, success, 0.5), 3),
                               "mean_successful": round(float(s[success].mean()), 3),
                               "mean_failed": round(float(s[~success].mean()), 3)}
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--last", type=int, default=10, help="pairs at an episode's end that the *_last scores average")
    p.add_argument("--folds", type=int, default=2, help="cross-fitting folds of the fresh discriminators")
    p.add_argument("--steps", type=int, default=1500, help="training steps of each fresh discriminator")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/diagnose/self_imitation_probe.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for run in args.runs:
        row = measure(run, args.last, args.folds, args.steps)
        rows.append(row)
        print(f"{run}: {row['episodes']} online episodes, success {row['success_rate']:.2f}; the run's D on the demos' "
              f"last pairs {row['run_D_last_demos']:+.2f}")
        print(f"  a fresh MLP's held-out R^2 of the task's reward on the online episodes: {row['fresh_reward_r2']:.3f}")
        if "reward_head_r2_online" in row:
            print(f"  the run's reward head R^2: online episodes {row['reward_head_r2_online']:.3f}, "
                  f"demos {row['reward_head_r2_demos']:.3f}")
        for name, s in row["scores"].items():
            print(f"  {name:24s} AUC {s['auc']:.3f}  top 25% success {s['top25_success']:.2f}  "
                  f"top 50% {s['top50_success']:.2f}  mean: successful {s['mean_successful']:+.2f}, "
                  f"failed {s['mean_failed']:+.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"commit": source_commit(), "last": args.last, "folds": args.folds,
                                    "rows": rows}, indent=1))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
