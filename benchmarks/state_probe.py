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
256 rows). Also (round 41) whether one imagined step of the world model moves the hand the way each action moves it
(`hand_response`, on the even-numbered episodes' states; the action held for one and for five steps), with the
agent's features as the run reads them and as 'mean' (with h_t). Prints a table and writes a JSON (default
benchmarks/results/diagnose/state_probe.json).
"""

from __future__ import annotations

import argparse
import dataclasses
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


def ridge_fit(x_train: torch.Tensor, y_train: torch.Tensor, ridge: float = 10.0):
    """A ridge regression of y (N, D) on standardised x (N, F); returns its prediction function."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a = (x_train - mean) / std
    w = torch.linalg.solve(a.T @ a + ridge * torch.eye(a.shape[1], dtype=a.dtype), a.T @ (y_train - y_train.mean(0)))
    return lambda x: ((x - mean) / std) @ w + y_train.mean(0)


def ridge_r2(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
             ridge: float = 10.0) -> float:
    return _r2(ridge_fit(x_train, y_train, ridge)(x_test), y_test)


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


@torch.no_grad()
def filtered(agent, episodes: list[dict]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Every episode filtered by the agent's world model: its features of frames 0..T-1, the true states there and
    the posterior states there, each stacked over the episodes."""
    feats, posts = [], []
    for ep in episodes:
        feat, _, post = agent.episode_features(ep)
        feats.append(feat)
        posts.append(post)
    states = torch.as_tensor(np.concatenate([ep["state"][:-1] for ep in episodes])).float()
    return torch.cat(feats).float(), states, {k: torch.cat([p[k] for p in posts]) for k in posts[0]}


def features_and_states(agent, episodes: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """The agent's features of frames 0..T-1 of every episode and the true states there, stacked."""
    return filtered(agent, episodes)[:2]


@torch.no_grad()
def imagined_response(wm, x_fit: torch.Tensor, pos_fit: torch.Tensor, post: dict, feat: torch.Tensor,
                      pos: torch.Tensor, actions: torch.Tensor, true_disp: torch.Tensor, steps: int = 1) -> dict:
    """Does one imagined step of the world model `wm` move a tracked object the way the action moves it (issue 9,
    round 41)? A ridge probe fitted on the posterior features `x_fit` -> the object's positions `pos_fit` reads the
    object in the one-step prior from each test state (`post`, its features `feat` (N, F), true positions `pos`)
    under each of `actions` (K, A) (every head's mean, averaged); its displacement against the true one `true_disp`
    (N, K, D). 'action part': both with each state's mean over the K actions removed, which is all an action's
    gradient can see; its slope is 1 for a model that moves the object as the env does, 0 for one that ignores the
    action, negative for one that moves it the other way. `steps` > 1: the action held for that many imagined steps
    (each head's means all along), against `true_disp` over as many env steps."""
    probe = ridge_fit(x_fit, pos_fit)
    n, k = len(feat), len(actions)
    start = {key: v[:, None].expand(n, k, *v.shape[1:]).reshape(n * k, *v.shape[1:]) for key, v in post.items()}
    acts = actions.repeat(n, 1)
    heads = wm.cfg.ensemble

    def held(head: int) -> torch.Tensor:
        state = start
        for _ in range(steps):
            state = wm.imagine_step(state, acts, sample=False, head=head)[0]
        return probe(wm.agent_feat(state))

    moved = sum(held(h) for h in range(heads)) / heads
    pred = moved.reshape(n, k, -1) - probe(feat)[:, None]
    pred_a, true_a = pred - pred.mean(1, keepdim=True), true_disp - true_disp.mean(1, keepdim=True)
    cos = torch.nn.functional.cosine_similarity(pred_a.flatten(), true_a.flatten(), dim=0, eps=1e-12)
    return {"probe_r2": _r2(probe(feat), pos),
            "displacement_r2": _r2(pred.flatten(0, 1), true_disp.flatten(0, 1)),
            "action_part_r2": _r2(pred_a.flatten(0, 1), true_a.flatten(0, 1)),
            "action_part_slope": round(float((pred_a * true_a).sum() / (true_a * true_a).sum()), 3),
            "action_part_cos": round(float(cos), 3)}   # over all states and actions


def hand_response(agent, fit: list[dict], test: list[dict], feat_form: str | None = None, states: int = 2000,
                  steps: int = 1) -> dict:
    """imagined_response for Meta-World's hand under 7 actions (zero and +-1 along x, y, z; gripper 0) held for
    `steps` steps from up to `states` of the `test` episodes' states, the probe fitted on the `fit` episodes. The
    hand follows a mocap target that the actions move, with a lag, so a step's displacement depends on the actions
    before it too: the true response is the env's, linearised on the test episodes' own transitions (the `steps`-step
    displacement regressed on the last `steps` + 4 actions' xyz; its R^2 reported) and summed over the actions held.
    `feat_form`: read the world model's states as this `wm.agent_feat` instead of the run's (e.g. 'mean': h_t too)."""
    hand, wm, lags = STATE_INDEX["hand"], agent.wm, steps + 4
    saved = wm.cfg
    if feat_form is not None:
        wm.cfg = dataclasses.replace(saved, agent_feat=feat_form)
    try:
        x_fit, s_fit = features_and_states(agent, fit)
        feats, posts, disps, designs, pos = [], [], [], [], []
        with torch.no_grad():
            for ep in test:
                feat, _, post = agent.episode_features(ep)
                s = torch.as_tensor(ep["state"]).float()
                a = torch.as_tensor(ep["action"]).float()[:, :3]      # a[t] led to frame t
                first = lags - steps                                    # states with `lags` actions before t + steps
                t = torch.arange(first, len(s) - steps)
                feats.append(feat[t].float())
                posts.append({k: v[t] for k, v in post.items()})
                pos.append(s[t][:, hand])
                disps.append(s[t + steps][:, hand] - s[t][:, hand])
                # actions leading to frames t-first+1 .. t+steps: the last `lags` before the displacement ends
                designs.append(torch.stack([a[t + steps - j] for j in range(lags)], 1).flatten(1))
        disp, design = torch.cat(disps), torch.cat(designs)
        design = torch.cat([design, torch.ones(len(design), 1)], -1)
        coef = torch.linalg.lstsq(design, disp).solution                # (3 * lags + 1, 3)
        # Held from t: the actions leading to frames t+1..t+steps are the probe action, the earlier ones as recorded.
        gain = coef[: 3 * steps].reshape(steps, 3, 3).sum(0)            # (3, 3): action xyz -> displacement
        probe_actions = torch.zeros(7, wm.action_dim)
        for i in range(3):
            probe_actions[1 + 2 * i, i], probe_actions[2 + 2 * i, i] = 1.0, -1.0
        idx = torch.randperm(len(disp), generator=torch.Generator().manual_seed(0))[:states]
        post = {k: torch.cat([p[k] for p in posts])[idx] for k in posts[0]}
        feat, pos = torch.cat(feats)[idx], torch.cat(pos)[idx]
        true = (probe_actions[:, :3] @ gain)[None].expand(len(idx), -1, -1)
        out = imagined_response(wm, x_fit, s_fit[:, hand], post, feat, pos, probe_actions, true, steps)
    finally:
        wm.cfg = saved
    out["feat_form"], out["steps"] = feat_form or saved.agent_feat, steps
    out["env_gain_diag"] = [round(float(g), 5) for g in gain.diagonal()]
    out["env_linear_r2"] = _r2(design @ coef, disp)
    return out


RESPONSE_STEPS = (1, 5)  # hand_response: one imagined step, and the action held for five


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
    # The run's own feature, and the world model read with h_t (the authors' form of the agent's input).
    row["hand_response"] = [hand_response(agent, demos + online[1::2], online[0::2], form, steps=held)
                            for form in dict.fromkeys([cfg.wm.agent_feat, "mean"]) for held in RESPONSE_STEPS]
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
        for response in row["hand_response"]:
            print(f"  one imagined step against the env's, the hand: {response}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"commit": source_commit(), "steps": args.steps, "rows": rows}, indent=1))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
