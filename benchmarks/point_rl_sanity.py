"""Does the actor-critic in imagination turn a reward into a better policy on a trivial task? (issue 9, round 39)

    python benchmarks/point_rl_sanity.py RUN [RUN ...] [--episodes 120] [--references 200] [--mlp-steps 2000]
                                             [--random-episodes 60] [--out JSON]

The RUNs are `point` runs trained on the task's own reward (`--agent.reward env`, e.g. `cmil train --method vmail
--task point --agent.reward env`): a point mass reaching a goal, 30 steps, dense reward -distance. Any working
Dreamer-style learner should beat doing nothing there. For each run (its latest checkpoint) this prints and writes:
  - its evaluations (success and return by env step) against three reference policies on the same placements
    (`--references` episodes from seed 20000: uniformly random actions, zero actions, the scripted expert);
  - what its features hold, on its last `--episodes` stored episodes (odd ones fit, even ones scored): the R^2 of a
    ridge regression and of an MLP (`state_probe.py`'s) from the agent's features to the point's and the goal's
    positions, and from (features, action) to the reward that followed; the R^2 of the run's own reward head
    (agent.reward 'env') on the same pairs;
  - which of the 9 actions {-1, 0, 1}^2 the run's reward head and its critics' min Q rate best at those states,
    against the one that truly brings the point closest to the goal (round 40): how often each picks it (chance
    1/9), and how often it picks its most common action (1 = one action whatever the state);
  - the world model's last logged KL (at the free-nats floor the posterior carries no more than it);
  - whether one imagined step moves the point the way the action does (state_probe.py's `imagined_response`,
    round 41), on the run's episodes and on `--random-episodes` episodes of random actions (states all over the
    box); the cosine with the direction to the goal of the actor's mean action and of the reward head's and the
    critics' action slopes; and the two parts of eq. 12's gradient for one imagined step (the reward head's slope;
    the critics' value of the predicted next state, through the world model's step).
Writes a JSON (default benchmarks/results/diagnose/point_rl_sanity.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from cmil.data.episodes import load_episodes
from cmil.envs import make_env
from cmil.envs.point import MAX_SPEED
from cmil.evaluate import recorded_rollouts, run_episode
from cmil.experts import make_expert
from cmil.launch import open_policy
from cmil.runs import read_metrics, source_commit
from state_probe import RESPONSE_STEPS, features_and_states, filtered, imagined_response, mlp_r2, ridge_r2
from state_probe import _r2 as r2

FIRST_PLACEMENT = 20_000  # the tuning placements, as the runs' own evaluations
RANDOM_PLACEMENT = 60_000  # the random-action episodes of the imagined-step check
POSITIONS = {"point": [0, 1], "goal": [2, 3]}  # columns of the point env's stored state
GRID = torch.tensor([[x, y] for x in (-1.0, 0.0, 1.0) for y in (-1.0, 0.0, 1.0)])  # 9 probe actions


def reference_returns(episodes: int) -> dict[str, dict[str, float]]:
    """Mean success and return of random, zero and scripted-expert actions on placements 20000.."""
    env = make_env("point")
    expert = make_expert("point", env)
    rng = np.random.default_rng(0)
    acts = {"random": lambda obs: rng.uniform(-1, 1, 2), "zero": lambda obs: np.zeros(2),
            "expert": lambda obs: expert.act()}
    out = {}
    for name, act in acts.items():
        rollouts = [run_episode(env, act, expert.reset, seed=FIRST_PLACEMENT + i) for i in range(episodes)]
        out[name] = {"success": float(np.mean([r.success for r in rollouts])),
                     "return": float(np.mean([r.ret for r in rollouts]))}
    env.close()
    return out


@torch.no_grad()
def best_action_agreement(agent, feat: torch.Tensor, state: torch.Tensor) -> dict:
    """At each state (the agent's features `feat` (N, F) and the true states (N, 4) there), which of the 9 actions
    {-1, 0, 1}^2 the run's reward head and its critics' min Q rate best, against the one that truly brings the point
    closest to the goal in one step (the env's own dynamics): how often each picks the true best (chance 1/9), and the
    share of states where it picks its most common action (1 = the same action everywhere, whatever the state)."""
    n, k = len(feat), len(GRID)
    f, a = feat[:, None].expand(n, k, -1).reshape(n * k, -1), GRID.repeat(n, 1)
    moved = (state[:, None, :2] + MAX_SPEED * GRID[None]).clamp(-1, 1)
    picks = {"truth": (-(moved - state[:, None, 2:]).norm(dim=-1)).argmax(1),
             "q_min": agent.critic(f, a).min(0).values.reshape(n, k).argmax(1)}
    if agent.imitation.head is not None:
        picks["reward_head"] = agent.imitation.task_reward(f, a).reshape(n, k).argmax(1)
    return {name: {"true_best": round(float((v == picks["truth"]).float().mean()), 3),
                   "most_common_share": round(float(torch.bincount(v, minlength=k).max() / len(v)), 3)}
            for name, v in picks.items()}


def _cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    return round(float(torch.nn.functional.cosine_similarity(x, y, dim=-1, eps=1e-12).mean()), 3)


def point_imagined_response(wm, x_fit: torch.Tensor, s_fit: torch.Tensor, post: dict, feat: torch.Tensor,
                            state: torch.Tensor, steps: int = 1) -> dict:
    """state_probe.imagined_response for the point, under the 9 actions {-1, 0, 1}^2 held `steps` steps, against
    `point`'s own dynamics (a step of 0.15 * action, clipped to the box); true states (N, 4) `s_fit` and `state`."""
    pos = state[:, :2]
    true = (pos[:, None] + steps * MAX_SPEED * GRID).clamp(-1, 1) - pos[:, None]
    return imagined_response(wm, x_fit, s_fit[:, :2], post, feat, pos, GRID, true, steps)


def action_gradients(agent, post: dict, feat: torch.Tensor, state: torch.Tensor) -> tuple[dict, dict]:
    """At the test states (posterior `post`, features `feat`, true states `state`), with a = the actor's mean action
    (round 41):
      - the cosine with the direction to the goal (the env's reward after one step rises fastest along it, away from
        the walls) of a itself and of the action slopes of the run's critics' min Q and of its reward head;
      - the two parts of eq. 12's gradient w.r.t. a for one imagined step: the reward head's slope d r(s, a) / da, and
        the value path gamma * d min_i Q_i(s'(a), pi(s')) / da through the world model's step s'(a) (every head's
        mean, averaged; the next action held fixed): their mean norms and cosines with the direction to the goal;
        and the correlation of the critics' values at the states with minus the distance to the goal (how far the
        values track the task).
    Returns (cosines, one-step paths)."""
    to_goal = state[:, 2:] - state[:, :2]
    wm, heads = agent.wm, agent.wm.cfg.ensemble
    with torch.no_grad():
        mean = agent.actor(feat).mean
    action = mean.clone().requires_grad_(True)
    slopes = {"q_min": lambda a: agent.critic(feat, a).min(0).values}
    if agent.imitation.head is not None:
        slopes["reward_head"] = lambda a: agent.imitation.task_reward(feat, a)
    grads = {name: torch.autograd.grad(value(action).sum(), action)[0] for name, value in slopes.items()}
    cosines = {"actor_mean": _cosine(mean, to_goal)} | {name: _cosine(g, to_goal) for name, g in grads.items()}

    nxt = [wm.agent_feat(wm.imagine_step(post, action, sample=False, head=h)[0]) for h in range(heads)]
    with torch.no_grad():
        next_action = [agent.actor(f).mean for f in nxt]
    value = sum(agent.critic(f, a).min(0).values for f, a in zip(nxt, next_action, strict=True)) / heads
    (g_value,) = torch.autograd.grad(agent.cfg.agent.gamma * value.sum(), action)
    with torch.no_grad():   # do the critics' values at the real states rise as the point nears the goal?
        here = agent.critic(feat, mean).min(0).values
    corr = torch.corrcoef(torch.stack([here, -to_goal.norm(dim=-1)]))[0, 1]
    paths = {"value_path": {"norm": round(float(g_value.norm(dim=-1).mean()), 4), "cos_to_goal": _cosine(g_value, to_goal)},
             "value_corr_with_minus_distance": round(float(corr), 3)}
    if "reward_head" in grads:
        paths["reward_head"] = {"norm": round(float(grads["reward_head"].norm(dim=-1).mean()), 4),
                                "cos_to_goal": cosines["reward_head"]}
    return cosines, paths


def measure(run: Path, episodes: int, mlp_steps: int, random_episodes: int) -> dict:
    parts = open_policy(run)
    agent = parts.method
    stored = load_episodes(run / "episodes")[-episodes:]
    fit, test = stored[1::2], stored[0::2]
    x_fit, s_fit = features_and_states(agent, fit)
    x_test, s_test, test_post = filtered(agent, test)

    def stacked(eps: list[dict], key: str) -> torch.Tensor:   # rows 1..T: the action taken, the reward after it
        rows = np.concatenate([ep[key][1:] for ep in eps])
        return torch.as_tensor(rows.reshape(len(rows), -1)).float()

    a_fit, a_test = stacked(fit, "action"), stacked(test, "action")
    r_fit, r_test = stacked(fit, "reward"), stacked(test, "reward")
    xa_fit, xa_test = torch.cat([x_fit, a_fit], -1), torch.cat([x_test, a_test], -1)
    row = {"run": str(run), "checkpoint": parts.checkpoint.name, "episodes": len(stored),
           "reward_source": parts.cfg.agent.reward, "r2": {}}
    for name, cols in POSITIONS.items():
        y_fit, y_test = s_fit[:, cols], s_test[:, cols]
        row["r2"][name] = {"ridge": ridge_r2(x_fit, y_fit, x_test, y_test),
                           "mlp": mlp_r2(x_fit, y_fit, x_test, y_test, mlp_steps)}
    row["r2"]["reward"] = {"ridge": ridge_r2(xa_fit, r_fit, xa_test, r_test),
                           "mlp": mlp_r2(xa_fit, r_fit, xa_test, r_test, mlp_steps)}
    if agent.imitation.head is not None:
        with torch.no_grad():
            pred = agent.imitation.task_reward(x_test, a_test)
        row["r2"]["reward"]["run_head"] = r2(pred.reshape(r_test.shape), r_test)
    row["best_action"] = best_action_agreement(agent, x_test, s_test)
    row["imagined_response"] = point_imagined_response(agent.wm, x_fit, s_fit, test_post, x_test, s_test)
    row["imagined_response_held"] = point_imagined_response(agent.wm, x_fit, s_fit, test_post, x_test, s_test,
                                                            RESPONSE_STEPS[-1])
    row["cos_to_goal"], row["one_step_paths"] = action_gradients(agent, test_post, x_test, s_test)
    # The same on random-action episodes: states all over the box, not only where the run's policy went.
    rng = np.random.default_rng(0)
    rand = recorded_rollouts(parts.env, lambda obs: rng.uniform(-1, 1, 2).astype(np.float32), lambda: None,
                             range(RANDOM_PLACEMENT, RANDOM_PLACEMENT + random_episodes))
    (xr_fit, sr_fit), (xr_test, sr_test, rand_post) = features_and_states(agent, rand[1::2]), filtered(agent, rand[0::2])
    row["imagined_response_random"] = point_imagined_response(agent.wm, xr_fit, sr_fit, rand_post, xr_test, sr_test)
    metrics = read_metrics(run)
    row["evaluations"] = [{"env_step": m["env_step"], "success": m["eval/success_rate"], "return": m["eval/return"]}
                          for m in metrics if "eval/success_rate" in m]
    kls = [m["model/kl"] for m in metrics if "model/kl" in m]
    row["model_kl_last"] = kls[-1] if kls else None
    parts.env.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--episodes", type=int, default=120, help="the run's last stored episodes to probe")
    parser.add_argument("--references", type=int, default=200, help="episodes of each reference policy")
    parser.add_argument("--random-episodes", type=int, default=60,
                        help="random-action episodes on which the imagined step is also checked (half fit the probe)")
    parser.add_argument("--mlp-steps", type=int, default=2000, help="steps of each MLP probe")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/diagnose/point_rl_sanity.json"))
    args = parser.parse_args()
    refs = reference_returns(args.references)
    print("references (success / return):", {k: (round(v["success"], 3), round(v["return"], 1)) for k, v in refs.items()})
    rows = []
    for run in args.runs:
        row = measure(run, args.episodes, args.mlp_steps, args.random_episodes)
        rows.append(row)
        evals = " ".join(f"{e['env_step']}: {e['success']:.2f}/{e['return']:.1f}" for e in row["evaluations"])
        print(f"== {run.name} ({row['checkpoint']}, reward {row['reward_source']}, model KL {row['model_kl_last']})")
        print(f"  evaluations (success/return): {evals}")
        cells = "; ".join(f"{name} " + " / ".join(str(v) for v in cell.values()) for name, cell in row["r2"].items())
        print(f"  R^2, ridge / MLP (/ the run's own reward head): {cells}")
        picks = "; ".join(f"{k} {v['true_best']} / {v['most_common_share']}" for k, v in row["best_action"].items())
        print(f"  best of 9 actions, picks the true best / its most common pick's share: {picks}")
        print(f"  one imagined step against the env's (probe of the point), the run's episodes: "
              f"{row['imagined_response']}; random actions: {row['imagined_response_random']}")
        print(f"  cosine with the direction to the goal: {row['cos_to_goal']}")
        print(f"  eq. 12's gradient w.r.t. the action, one imagined step: {row['one_step_paths']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"commit": source_commit(), "references": refs, "rows": rows}, indent=1))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
