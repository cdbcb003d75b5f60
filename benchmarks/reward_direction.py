"""Does CMIL's imitation signal point at the expert's action where the policy itself goes? (issue 9, round 20)

    python benchmarks/reward_direction.py RUN [RUN ...] [--episodes 20] [--seed 20000]
                                          [--fresh-steps 3000] [--grad-penalty 10] [--out JSON]
                                          [--candidates 32 --sigma 0.1 0.3]

Round 8 measured the slope of the imagined reward at the expert's own states, where the BC term already says what
to do. The online phase can only add to BC at the states the policy reaches and the demos do not cover. For each CMIL
run (its latest checkpoint): the acting policy runs from placements seed, seed + 1, ... (deterministic); at every step
the task's scripted expert is asked what it would do there (a DAgger-style relabel, for diagnosis only: no method
sees it). On those states, with the actor's mean action a and the expert's action e, for each signal's slope g = dX/da:
  - `cos`: the mean cosine between g and e - a (1 = straight at the expert's action, 0 = unrelated), with a 95%
    bootstrap interval over the rollouts (`cos_episodes_ci95`; one rollout's states are not independent);
  - `towards`: how often g and e - a agree in sign, per action dimension, where |e - a| > 0.05.
Signals: the run's own discriminator logit (eq. 10's D part), minus alpha x its (normalised) disagreement (the
penalty), the critics' min Q (eq. 12 through the critics' action input) and eq. 12's whole objective for the first
action (the lambda-return of an imagined rollout from that state, the actor acting on after it).

Then fresh discriminators on the run's frozen features, trained as CMIL trains its own (expert posterior pairs of the
run's demos against the policy's pairs, here the real ones of half the rollouts; standardised inputs) with
different regularisers: Gaussian input noise (the paper's, std as the run), none, and a gradient penalty on
interpolates (DAC / WGAN-GP style, `--grad-penalty`); their logit slopes are scored the same way on the other half.
A regulariser whose D slopes towards the expert's action at the policy's states is a reward the online phase could
climb. With `--candidates K` (round 31) the run's min Q, D logit and eq. 12 objective are also read by their values:
K actions drawn around the actor's mean, the best one's and the softmax-weighted offset scored against e - a as
above (the direction a critic-weighted regression actor would move), and how often each rates e above a; Q and D
also at the demos' own states (filtered with the expert's actions, e = the demo's action). Writes a JSON (default benchmarks/results/diagnose/reward_direction.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cmil.data.episodes import EpisodeRecorder, load_episodes
from cmil.evaluate import run_episode
from cmil.experts import make_expert
from cmil.launch import open_policy
from cmil.methods.cmil_objectives import weighted_average
from cmil.methods.teacher import LABEL_KEY
from cmil.runs import source_commit
from cmil.stats import bootstrap_ci
from diagnose_cmil import acting_states, episodes_features, train_fresh_disc

GAP_MIN = 0.05  # |expert - actor| below this in a dimension: no direction to agree with


def rollouts_with_expert(parts, episodes: int, seed: int) -> tuple[list[dict], list[np.ndarray], list[bool]]:
    """The acting policy's episodes from placements seed.., each step's scripted-expert action, successes."""
    env, policy = parts.env, parts.policy
    expert = make_expert(parts.cfg.task, env)
    eps, labels, successes = [], [], []
    for i in range(episodes):
        rec, said = EpisodeRecorder(record_state=False), []

        def act(obs, said=said):
            said.append(np.asarray(expert.act(), np.float32))
            return policy.act(obs, True)

        def reset():
            policy.reset()
            expert.reset()
        out = run_episode(env, act, reset, seed=seed + i, recorder=rec)
        eps.append(rec.finish())
        labels.append(np.stack(said))
        successes.append(bool(out.success))
    return eps, labels, successes


def direction(slope: torch.Tensor, gap: torch.Tensor, lengths: list[int] | None = None) -> dict:
    """How well the slopes (N, A) point along gap = expert - actor (N, A). With the episodes' `lengths` (summing to N),
    also a 95% bootstrap interval of the mean cosine over episodes (the states of one episode are not independent)."""
    cos = F.cosine_similarity(slope, gap, dim=-1, eps=1e-12)
    sure = gap.abs() > GAP_MIN
    agree = ((slope * gap) > 0) & sure
    towards = (agree.float().sum(0) / sure.float().sum(0).clamp(min=1)).tolist()
    out = {"cos": round(float(cos.mean()), 4), "cos>0": round(float((cos > 0).float().mean()), 4),
           "towards_per_dim": [round(t, 3) for t in towards]}
    if lengths is not None and len(lengths) > 1:
        per_episode = [float(c.mean()) for c in torch.split(cos.detach(), lengths)]
        ci = bootstrap_ci(per_episode)
        out["cos_episodes_ci95"] = [round(ci.low, 4), round(ci.high, 4)]
    return out


def objective_slope(agent, feat_states: dict, action: torch.Tensor, **kw) -> torch.Tensor:
    """d(eq. 12's objective)/d(first action) from each state (`objective`'s keywords)."""
    action = action.clone().requires_grad_(True)
    slope, = torch.autograd.grad(objective(agent, feat_states, action, **kw).sum(), action)
    return slope


def objective(agent, feat_states: dict, action: torch.Tensor, critic_action: bool = True,
              values: bool = True, horizon: int | None = None, penalty: bool = True) -> torch.Tensor:
    """Eq. 12's objective of taking `action` in each state: imagine one step with it, then the actor on (mean
    actions) for the horizon; lambda-returns of the reward with the critics' min Q bootstrapping (eq. 12).
    `critic_action` False reads the critics with the actions detached (agent.critic_action_grad false); `values`
    False drops the critics altogether (the imagined rewards' discounted sum only); `horizon` shortens the rollout;
    `penalty` False leaves the disagreement penalty out of the reward."""
    a, wm = agent.cfg.agent, agent.wm
    state, feats, acts, dis = feat_states, [wm.agent_feat(feat_states)], [action], []
    for t in range(horizon or a.horizon):
        state, d = wm.imagine_step(state, acts[-1], sample=False, head=t % wm.cfg.ensemble)
        dis.append(d)
        feats.append(wm.agent_feat(state))
        acts.append(agent.actor(feats[-1]).mean)
    feats, acts, dis = torch.stack(feats), torch.stack(acts), torch.stack(dis)
    reward = agent.imitation.reward(feats[:-1], acts[:-1], dis if penalty else None, update_stats=False)   # eq. 10
    if not values:
        discount = a.gamma ** torch.arange(len(reward), dtype=reward.dtype, device=reward.device)
        obj = (discount[:, None] * reward).sum(0)
    else:
        q_min = agent.critic(feats, acts if critic_action else acts.detach()).min(0).values
        obj = agent.lambda_objective(reward, q_min)[1]                                           # eq. 12
    return obj


def signal_scores(agent, feat: torch.Tensor) -> dict:
    """The run's critics' min Q and D's logit at the states `feat`, as functions of the action."""
    return {"Q": lambda act: agent.critic(feat, act).min(0).values,
            "D": lambda act: agent.imitation.logit(feat, act)}


@torch.no_grad()
def preference(score, other: torch.Tensor, mean: torch.Tensor, lengths: list[int]) -> dict:
    """How often `score(actions) -> (N,)` rates the action `other` above the actor's mean a (95% interval over
    rollouts)."""
    n = len(mean)
    prefers = (score(other).reshape(n) > score(mean).reshape(n)).float()
    ci = bootstrap_ci([float(p.mean()) for p in torch.split(prefers, lengths)])
    return {"rate": round(float(prefers.mean()), 4), "ci95": [round(ci.low, 4), round(ci.high, 4)]}


@torch.no_grad()
def value_direction(score, mean: torch.Tensor, gap: torch.Tensor, lengths: list[int], candidates: int,
                    sigma: float) -> dict:
    """Which way a signal's *values* (not its slope) move the action: `candidates` actions drawn around the actor's
    mean a (Gaussian, std `sigma`, clipped to the action box) are scored by `score(actions) -> (N,)`; the best one's
    offset from a and the softmax-weighted offset (temperature: each state's spread of scores; the advantage-weighted
    regression a CRR / AWR-style actor would follow) are scored against e - a like a slope, and `prefers_expert` is
    how often the signal rates the expert's action e above a (95% interval over rollouts)."""
    gen = torch.Generator(device=mean.device).manual_seed(0)
    cand = (mean + sigma * torch.randn((candidates, *mean.shape), generator=gen, device=mean.device)).clamp(-1, 1)
    n = len(mean)
    scores = torch.stack([score(c).reshape(n) for c in cand])                           # (K, N)
    best = cand[scores.argmax(0), torch.arange(n)]
    weighted = weighted_average(cand, scores)
    prefers = preference(score, mean + gap, mean, lengths)
    return {"best of candidates": direction(best - mean, gap, lengths),
            "weighted candidates": direction(weighted - mean, gap, lengths),
            "prefers_expert": prefers["rate"], "prefers_expert_ci95": prefers["ci95"]}


def measure(run: Path, episodes: int, seed: int, fresh_steps: int, grad_penalty: float, candidates: int = 0,
            sigmas: tuple[float, ...] = ()) -> dict:
    parts = open_policy(run)
    agent = parts.method
    torch.manual_seed(0)
    eps, labels, successes = rollouts_with_expert(parts, episodes, seed)
    # The states the policy was in (the filtering posterior's rebuilt with its own actions; the imagined steps start
    # from them), their features, the actor's mean actions and the gaps to the expert's.
    per_episode = [acting_states(agent, ep) for ep in eps]
    states = {k: torch.cat([st[k] for st in per_episode]) for k in per_episode[0]}
    lengths = [len(st["deter"]) for st in per_episode]
    with torch.no_grad():
        feat = agent.wm.agent_feat(states)
        mean = agent.actor(feat).mean
        gap = torch.as_tensor(np.concatenate(labels), device=agent.device) - mean
    row = {"run": str(run), "success": float(np.mean(successes)), "states": len(feat),
           "mean_abs_gap_per_dim": gap.abs().mean(0).tolist()}
    if agent.replay_keys:  # the anchor's teacher (agent.anchor_target 'bc'): its action on the same frames
        teacher = torch.as_tensor(np.concatenate([agent.label_episode(ep)[LABEL_KEY][:n] for ep, n in
                                                  zip(eps, lengths, strict=True)]), device=agent.device)
        row["teacher"] = direction(teacher - mean, gap, lengths) | {
            "closer_than_actor": round(float(((teacher - mean - gap).norm(dim=-1) < gap.norm(dim=-1)).float().mean()), 4)}

    # The run's own signals at those states.
    action = mean.clone().requires_grad_(True)
    signals = {"D": agent.imitation.logit(feat, action), "Q": agent.critic(feat, action).min(0).values}
    for name, value in signals.items():
        slope, = torch.autograd.grad(value.sum(), action)
        row[f"run/{name}"] = direction(slope, gap, lengths)
    for name, kw in (("eq12_objective", {}), ("eq12, critics as state values", {"critic_action": False}),
                     ("eq12, no penalty", {"penalty": False}),
                     ("eq12, no penalty, critics as state values", {"penalty": False, "critic_action": False}),
                     ("imagined rewards only", {"values": False}),
                     ("imagined rewards only, no penalty", {"values": False, "penalty": False}),
                     ("imagined rewards only, horizon 3", {"values": False, "horizon": 3}),
                     ("imagined reward, horizon 1", {"values": False, "horizon": 1}),
                     ("imagined D, horizon 3, no penalty", {"values": False, "horizon": 3, "penalty": False})):
        row[f"run/{name}"] = direction(objective_slope(agent, states, mean, **kw), gap, lengths)
    action = mean.clone().requires_grad_(True)
    dis = agent.wm.imagine_step(states, action, sample=False, head=0)[1]
    slope, = torch.autograd.grad(-agent.imitation.penalty(dis, update_stats=False).sum(), action)
    row["run/penalty"] = direction(slope, gap, lengths)

    if candidates or fresh_steps:  # the run's demos, filtered with the expert's actions
        cfg = parts.cfg
        demos = load_episodes(Path(cfg.demos), cfg.image_size, gap.shape[1], limit=cfg.num_demos)
        with torch.no_grad():
            demo_feat, demo_act, _ = episodes_features(agent, demos)
        demo_lengths = [len(ep["action"]) - 1 for ep in demos]   # episode_features' frames 0..T-1
    if candidates:
        signals = signal_scores(agent, feat)
        scores = signals | {"eq12_objective": lambda act: objective(agent, states, act)[0]}   # from the first action's state
        if "teacher" in row:  # would agent.anchor_filter 'q' keep the anchor here? (the critics rate the teacher higher)
            for name, score in signals.items():
                row["teacher"][f"{name} prefers it"] = preference(score, teacher, mean, lengths)
        for name, score in scores.items():
            for sigma in sigmas:
                row[f"values/{name}, sigma {sigma:g}"] = value_direction(score, mean, gap, lengths, candidates, sigma)
        # The same at the demos' own states, where the critics' real-data loss has seen the expert's action: is a
        # preference for the policy's action there too, or only off the demos?
        with torch.no_grad():
            demo_mean = agent.actor(demo_feat).mean
        for name, score in signal_scores(agent, demo_feat).items():
            row[f"demo states/values/{name}, sigma {sigmas[-1]:g}"] = value_direction(
                score, demo_mean, demo_act - demo_mean, demo_lengths, candidates, sigmas[-1])
    if fresh_steps:
        row |= fresh_discriminators(agent, lengths, feat, mean, gap, torch.cat([demo_feat, demo_act], -1),
                                    fresh_steps, grad_penalty)
    parts.env.close()
    return row


def fresh_discriminators(agent, lengths: list[int], feat, mean, gap, exp_x: torch.Tensor, fresh_steps: int,
                         grad_penalty: float) -> dict:
    """Fresh D's on the run's frozen features: expert pairs `exp_x` (the run's demos: features and actions) vs the
    policy's pairs of the first half of the rollouts (`lengths`: each rollout's states); their logit slopes scored on
    the other half."""
    row = {}
    half = len(lengths) // 2
    cut = sum(lengths[:half])
    pol_x = torch.cat([feat[:cut], mean[:cut]], -1).detach()
    test_feat, test_mean, test_gap = feat[cut:].detach(), mean[cut:].detach(), gap[cut:]
    F_ = feat.shape[1]
    variants = {f"noise {agent.cfg.agent.disc_noise_std:g}": (agent.cfg.agent.disc_noise_std, 0.0),
                "noise 0": (0.0, 0.0), f"grad penalty {grad_penalty:g}": (0.0, grad_penalty),
                f"noise {agent.cfg.agent.disc_noise_std:g} + grad penalty {grad_penalty:g}":
                    (agent.cfg.agent.disc_noise_std, grad_penalty)}
    for name, (noise, gp) in variants.items():
        disc, mu, sd = train_fresh_disc(exp_x, pol_x, F_, agent.cfg.agent.disc_units, noise, gp, fresh_steps)
        act = test_mean.clone().requires_grad_(True)
        x = (torch.cat([test_feat, act], -1) - mu) / sd
        logit = disc(x[:, :F_], x[:, F_:])
        slope, = torch.autograd.grad(logit.sum(), act)
        with torch.no_grad():
            xe = (exp_x - mu) / sd
            row_d = direction(slope, test_gap, lengths[half:]) | {
                "D(expert demos)": round(float(torch.sigmoid(disc(xe[:, :F_], xe[:, F_:])).mean()), 3),
                "D(policy, held-out)": round(float(torch.sigmoid(logit).mean()), 3)}
        row[f"fresh/{name}"] = row_d
    return row


def print_row(row: dict) -> None:
    print(f"== {row['run']}: success {row['success']:.2f} over the rollouts, {row['states']} states, "
          f"mean |expert - actor| per dim " + " ".join(f"{g:.3f}" for g in row["mean_abs_gap_per_dim"]))
    for key, v in row.items():
        if not isinstance(v, dict):
            continue
        if "prefers_expert" in v:
            low, high = v["prefers_expert_ci95"]
            print(f"  {key:48s} rates the expert's action above the actor's at {v['prefers_expert']:.2f} of the states"
                  f" [{low:.2f}, {high:.2f}]")
            for name in ("best of candidates", "weighted candidates"):
                print_direction(f"    {name}", v[name])
        else:
            print_direction(f"  {key}", v)
            for name, pref in v.items():
                if name.endswith("prefers it"):
                    print(f"    {name}: rates the teacher's action above the actor's at {pref['rate']:.2f} of the "
                          f"states [{pref['ci95'][0]:.2f}, {pref['ci95'][1]:.2f}]")


def print_direction(label: str, v: dict) -> None:
    extra = "".join(f", {k} {x}" for k, x in v.items() if k.startswith("D(") or k == "closer_than_actor")
    ci = v.get("cos_episodes_ci95")
    ci = f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""
    print(f"{label:50s} cos {v['cos']:+.3f}{ci}  cos>0 {v['cos>0']:.2f}  towards per dim "
          + " ".join(f"{t:.2f}" for t in v["towards_per_dim"]) + extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=20_000, help="first placement (tuning placements: 20000+)")
    parser.add_argument("--fresh-steps", type=int, default=3000, help="updates of each fresh discriminator (0: none)")
    parser.add_argument("--grad-penalty", type=float, default=10.0)
    parser.add_argument("--candidates", type=int, default=0,
                        help="actions drawn around the actor's mean to score Q, D and eq. 12 by value (0: none)")
    parser.add_argument("--sigma", type=float, nargs="+", default=[0.1, 0.3], help="std of those draws")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/diagnose/reward_direction.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for run in args.runs:
        row = measure(run, args.episodes, args.seed, args.fresh_steps, args.grad_penalty, args.candidates,
                      tuple(args.sigma))
        print_row(row)
        rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"commit": source_commit(), "episodes": args.episodes, "seed": args.seed,
                                    "fresh_steps": args.fresh_steps, "candidates": args.candidates,
                                    "sigma": args.sigma, "rows": rows}, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
