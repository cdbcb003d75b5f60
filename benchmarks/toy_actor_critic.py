"""Does CMIL's actor-critic learn when the world model is perfect? (issue 9, round 41)

    python benchmarks/toy_actor_critic.py [--updates 2000] [--every 250] [--seed 0] [--set agent.FIELD=VALUE ...]
                                          [--features raw|random] [--speed 0.15] [--model-error 0] [--out JSON]

Rounds 39-40 found the actor-critic failing `point` with the task's own reward even where the features hold the point
and the goal. This takes the world model and the reward out of the question: CMIL's own update code (imagination,
eq. 10-12's actor objective, the critics' eqs. 13-15, the actor and critic steps, the target copies) runs on a stub
world whose state is the true (point, goal) positions, whose `imagine_step` is `point`'s exact, differentiable
dynamics (pos + 0.15 a, clipped to the box) and whose reward is `point`'s (-distance after the step). Imagination
starts from uniformly drawn placements. Every `--every` updates it scores the actor's deterministic policy on 200
fixed placements over 30 steps of the true dynamics (mean return per episode) against zero actions and the
scripted expert (full speed towards the goal), and the cosine of its action with the direction to the goal.
`--features random` gives the agent a fixed random 32-d embedding of the state instead of the 4 raw numbers
(a representation more like a world model's); `--speed` sets how the imagined step moves the point (the reward
stays `point`'s: a right reward model on a wrong dynamics model); `--model-error` makes it right on average over
states and wrong at each by that fraction of its size (round 42: how exact must the imagined response be?).
Writes a JSON (default benchmarks/results/diagnose/toy_actor_critic.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from cmil.config import replace
from cmil.envs.point import EPISODE_LENGTH, MAX_SPEED
from cmil.methods.cmil import CMIL
from cmil.models.optim import clipped_step
from cmil.presets import PRESETS, apply_method
from cmil.runs import source_commit
from diagnose_cmil import parse_sets
from point_rl_sanity import point_imagined_response


def step_pos(pos: torch.Tensor, action: torch.Tensor, speed: float = MAX_SPEED,
             field: torch.Tensor | None = None) -> torch.Tensor:
    """`point`'s dynamics: a step of MAX_SPEED * action, clipped to the box (differentiable inside it). `field`
    (N, 2, 2), the stub model's per-state error (ToyWorld), moves the point by a + field a instead of a."""
    action = action.clamp(-1, 1)
    if field is not None:
        action = action + torch.einsum("nij,nj->ni", field, action)
    return (pos + speed * action).clamp(-1, 1)


class ToyWorld(nn.Module):
    """The world model's interface for the agent (`agent_feat`, `imagine_step`) on the true state: 'pos' and
    'goal' (N, 2); the feature is (pos, goal), or a fixed random embedding of it (`embed`).

    `error` > 0 makes the imagined step's response to the action wrong by a fixed smooth random 2 x 2 field M(pos):
    the point moves by speed * (a + error * M(pos) a), with E|M(pos) a|^2 = |a|^2, so the response is right on average
    over states and off at each state by `error` times its own size (as a learnt model's is: round 42)."""

    def __init__(self, embed: torch.Tensor | None = None, speed: float = MAX_SPEED, error: float = 0.0,
                 error_seed: int = 0):
        super().__init__()
        self.register_buffer("embed", embed if embed is not None else torch.zeros(0))
        self.speed = speed  # -MAX_SPEED: a model whose imagined step moves the point against the action
        self.error = error
        g = torch.Generator().manual_seed(error_seed)
        waves = 8
        self.register_buffer("freq", torch.randn(2, waves, generator=g) * 2.0)
        self.register_buffer("phase", torch.rand(waves, generator=g) * 2 * torch.pi)
        # sin of a random phase has variance 1/2, so each entry of M has variance `waves` * 1/2 / waves = 1 / 2.
        self.register_buffer("coef", error * torch.randn(waves, 2, 2, generator=g) / waves ** 0.5)
        self.cfg = SimpleNamespace(ensemble=1)
        self.visited: list[dict[str, torch.Tensor]] = []  # the current rollout's true states, for the reward

    @property
    def feat_dim(self) -> int:
        return 4 if self.embed.numel() == 0 else self.embed.shape[1]

    def agent_feat(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        x = torch.cat([state["pos"], state["goal"]], -1)
        return x if self.embed.numel() == 0 else torch.tanh(x @ self.embed)

    def imagine_step(self, state: dict[str, torch.Tensor], action: torch.Tensor, sample: bool = True, head=None):
        field = (torch.einsum("nk,kij->nij", torch.sin(state["pos"] @ self.freq + self.phase), self.coef)
                 if self.error else None)
        nxt = {"pos": step_pos(state["pos"], action, self.speed, field), "goal": state["goal"]}
        self.visited.append(nxt)
        return nxt, torch.zeros(action.shape[0])


class ToyReward(nn.Module):
    """The reward's interface (`reward(feat, action, disagreement)`): `point`'s -distance after the step (at the
    env's speed, whatever the model's), from the true states of the world stub's current rollout."""

    def __init__(self, world: ToyWorld):
        super().__init__()
        self.visited = world.visited  # the same list (not the module: `frozen(wm, imitation)` must not see it twice)

    def reward(self, feat, action, disagreement, update_stats: bool = True) -> torch.Tensor:
        pos = torch.stack([s["pos"] for s in self.visited[:-1]])
        goal = torch.stack([s["goal"] for s in self.visited[:-1]])
        return -(step_pos(pos, action) - goal).norm(dim=-1)


def placements(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"pos": torch.rand(n, 2, generator=g) * 1.6 - 0.8, "goal": torch.rand(n, 2, generator=g) * 1.6 - 0.8}


@torch.no_grad()
def score(agent: CMIL, world: ToyWorld, state: dict[str, torch.Tensor]) -> dict[str, float]:
    """Deterministic episodes of the actor's mean on the true dynamics: mean return, success, and the cosine of the
    first action with the direction to the goal; beside zero actions and the scripted expert."""
    def rollout(act):
        s, ret = dict(state), torch.zeros(len(state["pos"]))
        for _ in range(EPISODE_LENGTH):
            s = {"pos": step_pos(s["pos"], act(s)), "goal": s["goal"]}
            ret -= (s["pos"] - s["goal"]).norm(dim=-1)
        return float(ret.mean()), float(((s["pos"] - s["goal"]).norm(dim=-1) < 0.12).float().mean())

    def expert(s):
        d = s["goal"] - s["pos"]
        return (d / MAX_SPEED).clamp(-1, 1)

    policy = lambda s: agent.actor(world.agent_feat(s)).mode()  # noqa: E731
    a0 = policy(state)
    direction = state["goal"] - state["pos"]
    out = {"cos_to_goal": float(torch.nn.functional.cosine_similarity(a0, direction, dim=-1).mean()),
           "mean_abs_action": float(a0.abs().mean()),
           "std": float(agent.actor(world.agent_feat(state)).std.mean())}
    out["return"], out["success"] = rollout(policy)
    out["zero_return"], _ = rollout(lambda s: torch.zeros_like(s["pos"]))
    out["expert_return"], _ = rollout(expert)
    return out


def train(cfg, updates: int, every: int = 0, features: str = "raw", starts: int = 128,
          speed: float = MAX_SPEED, error: float = 0.0) -> list[dict]:
    """`updates` of CMIL's actor and critics on the stub world (imagined steps of `speed` * action, off by `error`
    at each state; the reward always `point`'s), scored every `every` updates (0: only at the start and the end)."""
    torch.manual_seed(cfg.seed)
    embed = torch.randn(4, 32) if features == "random" else None
    world = ToyWorld(embed, speed, error)
    cfg = replace(cfg, **{"wm.stoch": world.feat_dim, "wm.agent_feat": "stoch", "agent.real_critic_loss": False,
                          "agent.alpha": 0.0})
    agent = CMIL(cfg, 2, torch.device("cpu"))
    agent.wm, agent.imitation = world, ToyReward(world)
    test = placements(200, 12345)
    curve, t0 = [], time.time()
    for u in range(updates + 1):
        if u == updates or (every and u % every == 0) or u == 0:
            row = {"update": u, **score(agent, world, test), "seconds": time.time() - t0}
            curve.append(row)
            print(f"update {u:5d}: return {row['return']:7.2f} (zero {row['zero_return']:.2f}, expert "
                  f"{row['expert_return']:.2f}) success {row['success']:.2f} cos {row['cos_to_goal']:+.2f} "
                  f"|a| {row['mean_abs_action']:.2f} std {row['std']:.2f}", flush=True)
        if u == updates:
            break
        start = placements(starts, cfg.seed * 1_000_003 + u)
        world.visited[:] = [start]
        post = {k: v[None] for k, v in start.items()}   # (1, N, ...): _rl_objective flattens (B, L)
        imag, rl_loss, _ = agent._rl_objective(post, slice(None))
        agent._actor_step(rl_loss, 0 * sum(p.sum() for p in agent.actor.parameters()))  # no BC term
        feats, actions = imag.feats.detach(), imag.actions.detach()
        critic_loss, _ = agent.critic_loss(None, None, None, feats, actions, imag.reward.detach(),
                                           q_imag=imag.q[:, :-1])
        clipped_step(agent.critic_opt, critic_loss, agent.critic.q.parameters(), cfg.agent.grad_clip)
        if (u + 1) % cfg.agent.target_update_every == 0:
            agent.critic.update_target()
    return curve


def model_response(speed: float, error: float) -> list[dict]:
    """point_rl_sanity's `point_imagined_response` of the stub world (one step, and the action held five steps),
    the measure the learnt world models get (rounds 41-42)."""
    world = ToyWorld(speed=speed, error=error)
    fit, test = placements(300, 1), placements(200, 2)
    state = lambda s: torch.cat([s["pos"], s["goal"]], -1)  # noqa: E731
    out = [{"steps": held, **point_imagined_response(world, world.agent_feat(fit), state(fit), test,
                                                     world.agent_feat(test), state(test), held)}
           for held in (1, 5)]
    world.visited.clear()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="default", choices=sorted(PRESETS))
    p.add_argument("--updates", type=int, default=2000)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--starts", type=int, default=128, help="imagined rollouts per update")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--features", choices=["raw", "random"], default="raw")
    p.add_argument("--speed", type=float, default=MAX_SPEED,
                   help="how far an imagined step moves the point per unit of action (the env: 0.15; negative: "
                        "against the action; 0: the model ignores the action)")
    p.add_argument("--model-error", type=float, default=0.0,
                   help="how far off the imagined step's response to the action is at each state, relative to its "
                        "size (a fixed smooth random field; right on average over states)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/diagnose/toy_actor_critic.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = apply_method(replace(PRESETS[args.preset], method="vmail", task="point", seed=args.seed))
    cfg = replace(cfg, **parse_sets(args.set))
    curve = train(cfg, args.updates, args.every, args.features, args.starts, args.speed, args.model_error)
    result = {"commit": source_commit(), "preset": args.preset, "set": args.set, "features": args.features,
              "imagined_speed": args.speed, "model_error": args.model_error,
              "imagined_response": model_response(args.speed, args.model_error),
              "seed": args.seed, "starts": args.starts, "curve": curve}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
