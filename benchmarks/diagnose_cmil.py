"""Fast offline diagnosis of a CMIL recipe (issue 9): what the pretrained agent knows before any env step.

    python benchmarks/diagnose_cmil.py [--preset default] [--set agent.bc_model_weight=1 ...]
                                       [--seed 100] [--name NAME]
    python benchmarks/diagnose_cmil.py --checkpoints runs/compare/mw-push__cmil__seed* --heldout 20 --name NAME

Pretrains CMIL exactly as `cmil train` does (demos only), then measures, and prints as a table:
  1. the pretrained policy's success over `--episodes` episodes (eval seeds 20000+, never the
     10000+ seeds of the benchmark's final evaluations);
  2. the actor's action error on held-out demo frames (expert episodes the agent never saw), against
     always predicting the demos' mean action;
  3. the held-out accuracy of a *fresh* discriminator on the frozen features, expert vs the pretrained
     policy's own frames, at several input-noise levels, raw and standardised;
  4. the ensemble disagreement for expert, policy and uniformly random actions, on real states and on
     states imagined by the policy;
  5. over `--updates` online updates (replay = the policy's episodes): the norms of the RL part and of
     the beta-weighted BC part of the actor gradient and their cosine, and the reward/Q scale.
Writes everything to benchmarks/results/diagnose/{name}.json. Tune with seeds other than 0-2 (the
benchmark's training seeds); the default --seed is 100.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm.auto import tqdm

from cmil.config import replace
from cmil.config_io import flatten
from cmil.data.collect import collect_demos
from cmil.data.episodes import load_episodes
from cmil.data.replay import SequenceReplay, batch_to_torch
from cmil.envs import make_env
from cmil.evaluate import demo_success_rate, recorded_rollouts
from cmil.methods.cmil import CMIL
from cmil.models.actor_critic import Discriminator, gradient_penalty
from cmil.models.world_model import STATE_KEYS
from cmil.presets import PRESETS, apply_method
from cmil.runs import source_commit

HELDOUT_SEED = 3_000_000  # expert episodes for held-out measurements (the training demos use 1_000_000)
EVAL_SEED = 20_000


def parse_sets(pairs: list[str]) -> dict:
    """`--set FIELD=VALUE` arguments as {field: value}, each value read as YAML (3, 0.5, true, a string)."""
    out = {}
    for kv in pairs:
        key, sep, value = kv.partition("=")
        if not sep:
            raise SystemExit(f"--set {kv!r}: expected FIELD=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def _episode_tensors(agent: CMIL, ep: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An episode's images, actions and is_first flags as (1, T, ...) tensors on the agent's device."""
    return tuple(torch.as_tensor(ep[k], device=agent.device)[None] for k in ("image", "action", "is_first"))


@torch.no_grad()
def acting_states(agent: CMIL, ep: dict) -> dict[str, torch.Tensor]:
    """Posterior states (T, ...) of an episode's frames 0..T-1 filtered with the actor's own mean actions, as in
    closed loop (`WorldModel.observe_acting`): the states the policy would be in on those images."""
    wm = agent.wm
    image, action, is_first = _episode_tensors(agent, ep)
    post = wm.observe_acting(wm.encode(image), is_first, lambda f: agent.actor(f).mean, action[:, 0], sample=False)
    return {k: post[k][0, :-1] for k in STATE_KEYS}


def acting_features(agent: CMIL, ep: dict) -> torch.Tensor:
    """`acting_states`' agent features (T, F)."""
    return agent.wm.agent_feat(acting_states(agent, ep))


def episodes_features(agent: CMIL, episodes: list[dict]) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """`CMIL.episode_features` of several episodes, concatenated over their frames: features, actions, states."""
    parts = [agent.episode_features(ep) for ep in episodes]
    return (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
            {k: torch.cat([p[2][k] for p in parts]) for k in STATE_KEYS})


@torch.no_grad()
def action_error(agent: CMIL, episodes: list[dict], acting: bool = False) -> float:
    """Mean over episodes of the actor's mean action's squared error per dimension against the expert's, on
    states filtered with the expert's actions or (`acting`) with the actor's own."""
    errors = []
    for ep in episodes:
        if acting:
            feat, action = acting_features(agent, ep), torch.as_tensor(ep["action"][1:], device=agent.device)
        else:
            feat, action, _ = agent.episode_features(ep)
        errors.append((agent.actor(feat).mean - action).pow(2).mean().item())
    return float(np.mean(errors))


@torch.no_grad()
def generated_pairs(agent: CMIL, episodes: list[dict]) -> dict[str, torch.Tensor]:
    """(feature, action) pairs of the same episodes made three ways: 'posterior' (frames 1..T-1 as the filter
    saw them), 'prior' (the same frames as the model's one-step prediction from the previous posterior state
    and the action taken; head 0, means) and 'imagined' (steps 1..9 of the policy's imagined rollouts from
    every 10th posterior state, as D's policy side sees them in training)."""
    wm, out = agent.wm, {"posterior": [], "prior": [], "imagined": []}
    for ep in episodes:
        feat, action, post = agent.episode_features(ep)            # action[t]: taken at frame t
        out["posterior"].append(torch.cat([feat[1:], action[1:]], -1))
        nxt, _ = wm.imagine_step({k: v[:-1] for k, v in post.items()}, action[:-1], sample=False, head=0)
        out["prior"].append(torch.cat([wm.agent_feat(nxt), action[1:]], -1))
        feats, actions, _, _ = agent.imagine({k: v[::10] for k, v in post.items()}, 9)
        out["imagined"].append(torch.cat([feats[1:], actions[1:]], -1).flatten(0, 1))
    return {k: torch.cat(v) for k, v in out.items()}


def disc_action_probe(agent: CMIL, expert_eps: list[dict]) -> dict:
    """What the imagined reward (eq. 10) makes of the action at the expert's own (held-out) states. D's mean
    probability with the expert's action, the actor's mean action, zero actions and the expert's action x 0.5;
    then, per action dimension, the mean slope at the actor's action of D's logit and of minus the penalty
    (alpha x the disagreement of the step, normalised as the run normalises it): the direction each part of the
    reward pulls the actor in where eq. 12's gradient reaches the action directly; the mean gap expert - actor;
    and how often each slope's sign points at the expert's action. A reward that reads behaviour slopes towards
    the expert's action; docs/results.md (round 8) found neither part does. The same for the critics' min Q
    ('Q_...'): what eq. 12 asks of the action through the critics' action input (round 9)."""
    feat, expert, state = episodes_features(agent, expert_eps)
    with torch.no_grad():
        mean = agent.actor(feat).mean
        prob = {name: float(torch.sigmoid(agent.imitation.logit(feat, act)).mean()) for name, act in
                (("expert", expert), ("actor", mean), ("zero", torch.zeros_like(expert)), ("expert_x0.5", 0.5 * expert))}
    gap, out = expert - mean, {f"D_action/{k}": v for k, v in prob.items()}
    out["D_action/expert_minus_actor_per_dim"] = gap.mean(0).tolist()
    action = mean.clone().requires_grad_(True)
    disagreement = agent.wm.imagine_step(state, action, sample=False, head=0)[1]
    q_min = agent.critic(feat, action).min(0).values  # the critics' own action slope (eq. 12 with critic_action_grad)
    for name, value in (("D", agent.imitation.logit(feat, action)),
                        ("penalty", -agent.imitation.penalty(disagreement, update_stats=False)),
                        ("Q", q_min)):
        slope, = torch.autograd.grad(value.sum(), action)
        out[f"D_action/{name}_slope_per_dim"] = slope.mean(0).tolist()
        out[f"D_action/{name}_abs_slope_per_dim"] = slope.abs().mean(0).tolist()
        out[f"D_action/{name}_slope_towards_expert_per_dim"] = ((slope * gap) > 0).float().mean(0).tolist()
    return out


def disc_probe(agent: CMIL, expert_eps: list[dict], policy_eps: list[dict], split_seed: int = 0) -> dict:
    """What the discriminator can separate. The agent's own D: its mean probability on expert and policy
    pairs made each way (`generated_pairs`). A fresh D (no noise, standardised inputs, held-out frames):
    expert posterior vs expert prior pairs is the generator artifact (same frames and actions, only how
    the state was made differs); expert vs policy with both made the same way is behaviour."""
    e, p = generated_pairs(agent, expert_eps), generated_pairs(agent, policy_eps)
    F_ = agent.wm.agent_feat_dim
    out = {}
    with torch.no_grad():
        for side, pairs in (("expert", e), ("policy", p)):
            for kind, x in pairs.items():
                out[f"D/{side}_{kind}"] = float(torch.sigmoid(agent.imitation.logit(x[:, :F_], x[:, F_:])).mean())
    gen = torch.Generator().manual_seed(split_seed)

    def fresh(a, b):
        ia, ib = torch.randperm(len(a), generator=gen), torch.randperm(len(b), generator=gen)
        ka, kb = int(0.7 * len(a)), int(0.7 * len(b))
        return fresh_disc_accuracy(a[ia[:ka]], b[ib[:kb]], a[ia[ka:]], b[ib[kb:]], 0.0, True,
                                   agent.cfg.agent.disc_units)
    out["fresh/artifact: expert posterior vs expert prior"] = fresh(e["posterior"], e["prior"])
    out["fresh/trained task: expert posterior vs policy imagined"] = fresh(e["posterior"], p["imagined"])
    out["fresh/behaviour: expert vs policy, posterior"] = fresh(e["posterior"], p["posterior"])
    out["fresh/behaviour: expert vs policy, prior"] = fresh(e["prior"], p["prior"])
    return out


def rollouts(env, agent: CMIL, episodes: int, deterministic: bool, live: bool = False) -> list[dict]:
    """`episodes` episodes of the agent's acting policy (its live weights with `live`) from EVAL_SEED on."""
    policy = agent.policy(live=live)
    seeds = tqdm(range(EVAL_SEED, EVAL_SEED + episodes), desc="pretrained policy", leave=False)
    return recorded_rollouts(env, lambda o: policy.act(o, deterministic), policy.reset, seeds)


def train_fresh_disc(exp_x: torch.Tensor, pol_x: torch.Tensor, feat_dim: int, units: int, noise: float,
                     grad_penalty: float = 0.0, steps: int = 1500, seed: int = 0, standardise: bool = True
                     ) -> tuple[Discriminator, torch.Tensor, torch.Tensor]:
    """A new D on (feature, action) rows split at `feat_dim` (all feature: a state-only D): expert = 1, policy = 0,
    with input noise `noise` and optionally a WGAN-GP penalty; inputs standardised by both sides' statistics.
    Returns it with the mean and std to standardise its inputs by (0 and 1 without `standardise`)."""
    torch.manual_seed(seed)
    both = torch.cat([exp_x, pol_x])
    mean, std = (both.mean(0), both.std(0) + 1e-2) if standardise else (torch.zeros(1), torch.ones(1))
    e, p = (exp_x - mean) / std, (pol_x - mean) / std
    disc = Discriminator(feat_dim, e.shape[1] - feat_dim, 2, units, noise)
    opt = torch.optim.Adam(disc.parameters(), lr=3e-4)
    for _ in range(steps):
        be, bp = e[torch.randint(len(e), (128,))], p[torch.randint(len(p), (128,))]
        le = disc(be[:, :feat_dim], be[:, feat_dim:], noise=True)
        lp = disc(bp[:, :feat_dim], bp[:, feat_dim:], noise=True)
        loss = F.binary_cross_entropy_with_logits(le, torch.ones_like(le)) + \
            F.binary_cross_entropy_with_logits(lp, torch.zeros_like(lp))
        if grad_penalty:
            loss = loss + grad_penalty * gradient_penalty(disc, (be[:, :feat_dim], be[:, feat_dim:]),
                                                          (bp[:, :feat_dim], bp[:, feat_dim:]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return disc, mean, std


def fresh_disc_accuracy(train_e, train_p, test_e, test_p, noise: float, standardise: bool, units: int,
                        steps: int = 1500, seed: int = 0) -> float:
    """Held-out balanced accuracy of a new (state-only) discriminator trained with input noise `noise`."""
    dim = train_e.shape[1]
    disc, mean, std = train_fresh_disc(train_e, train_p, dim, units, noise, steps=steps, seed=seed,
                                       standardise=standardise)
    test_e, test_p = (test_e - mean) / std, (test_p - mean) / std
    with torch.no_grad():
        acc_e = (disc(test_e, test_e[:, :0]) > 0).float().mean()
        acc_p = (disc(test_p, test_p[:, :0]) < 0).float().mean()
    return float((acc_e + acc_p) / 2)


@torch.no_grad()
def disagreement_by_action(agent: CMIL, states: dict, expert_act: torch.Tensor | None, horizon: int) -> dict:
    """Mean disagreement of the step taken from `states` with expert / policy / random actions; then the
    same for policy vs random actions on the states the policy imagines from there."""
    wm, out = agent.wm, {}
    feat = wm.agent_feat(states)
    pol = agent.actor(feat).mean
    rnd = torch.rand_like(pol) * 2 - 1
    choices = {"policy": pol, "random": rnd} | ({"expert": expert_act} if expert_act is not None else {})
    for name, act in choices.items():
        out[f"real/{name}"] = float(wm.imagine_step(states, act, head=0)[1].mean())
    state, pol_d, rnd_d = states, [], []
    for _ in range(horizon):
        f = wm.agent_feat(state)
        a = agent.actor(f).mean
        rnd_d.append(float(wm.imagine_step(state, torch.rand_like(a) * 2 - 1, head=0)[1].mean()))
        state, d = wm.imagine_step(state, a, head=0)
        pol_d.append(float(d.mean()))
    out["imagined/policy"], out["imagined/random"] = float(np.mean(pol_d)), float(np.mean(rnd_d))
    return out


def prepare(args):
    """The recipe (preset + `--set`s), seeded, its env, the demos, `args.heldout` held-out expert episodes
    (collected once into `{demos}-heldout{N}` from HELDOUT_SEED on, so a larger set starts with a smaller
    one) and the demo replay."""
    sets = parse_sets(args.set)
    cfg = apply_method(replace(PRESETS[args.preset], method="cmil", seed=args.seed, **sets))
    torch.set_num_threads(cfg.threads or 1)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    name = args.name or ("_".join(f"{k}={v}" for k, v in sets.items()) or "base")
    demo_dir = Path(args.demos or cfg.demos or f"demos/{cfg.task}")
    heldout_dir = demo_dir.with_name(f"{demo_dir.name}-heldout{args.heldout}")
    if not heldout_dir.exists():
        collect_demos(cfg.task, args.heldout, heldout_dir, seed=HELDOUT_SEED, image_size=cfg.image_size, quiet=True)
    env = make_env(cfg.task, seed=cfg.seed, image_size=cfg.image_size)
    actions = env.action_space.shape[0]
    demos = load_episodes(demo_dir, cfg.image_size, actions, limit=cfg.num_demos)
    heldout = load_episodes(heldout_dir, cfg.image_size, actions, limit=args.heldout)
    expert = SequenceReplay(cfg.seq_len, seed=cfg.seed, cover_edges=cfg.cover_edges)
    for ep in demos:
        expert.add_episode(ep)
    return cfg, sets, name, env, demos, heldout, expert


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--heldout", type=int, default=5, help="held-out expert episodes")
    parser.add_argument("--updates", type=int, default=30, help="online updates for the gradient split")
    parser.add_argument("--demos", default=None)
    parser.add_argument("--name", default=None)
    parser.add_argument("--out", default="benchmarks/results/diagnose")
    parser.add_argument("--save", action="store_true", help="also save the pretrained agent's weights (.pt)")
    parser.add_argument("--bc-reference", action="store_true",
                        help="instead: pixel BC (`--method bc`) measured the same way (success, held-out action error)")
    parser.add_argument("--checkpoints", nargs="+", default=None, metavar="RUN",
                        help="instead: the action error of each saved checkpoint of these CMIL runs, on the demos "
                             "and the held-out episodes (does online training lose imitation on expert states?)")
    parser.add_argument("--disc-probe", nargs="+", default=None, metavar="RUN",
                        help="instead: what each run's discriminator (last checkpoint) separates, on the held-out "
                             "expert episodes and the run's last 30 episodes (`disc_probe`)")
    args = parser.parse_args()

    cfg, sets, name, env, demos, heldout, expert = prepare(args)
    A = env.action_space.shape[0]
    t0 = time.time()
    if args.bc_reference:
        return bc_reference(cfg, env, demos, heldout, expert, args, name, t0)
    if args.checkpoints:
        env.close()
        return checkpoint_errors([Path(r) for r in args.checkpoints], demos, heldout, Path(args.out) / f"{name}.json")
    if args.disc_probe:
        env.close()
        return disc_probe_runs([Path(r) for r in args.disc_probe], heldout, Path(args.out) / f"{name}.json")
    agent = CMIL(cfg, A, torch.device("cpu"))
    with tqdm(total=agent.pretrain_steps(), desc="pretrain", leave=False) as bar:
        pre = agent.pretrain(expert, bar.update)
    t_pre = time.time() - t0
    pretrained = {k: {n: v.clone() for n, v in m.state_dict().items()} for k, m in agent.modules().items()} \
        if args.save else None
    result: dict = {"name": name, "preset": args.preset, "overrides": sets, "seed": cfg.seed,
                    "pretrain_s": round(t_pre, 1), "pretrain_metrics": pre}

    # 1. The pretrained policy in the env.
    policy_eps = rollouts(env, agent, args.episodes, cfg.eval_deterministic)
    env.close()
    result["pretrained_success"] = demo_success_rate(policy_eps)
    result["pretrained_return"] = float(np.mean([ep["reward"].sum() for ep in policy_eps]))

    # 2. Action error on held-out demo frames.
    feats = {k: [agent.episode_features(ep) for ep in eps] for k, eps in
             (("train", demos), ("heldout", heldout), ("policy", policy_eps))}
    mean_action = torch.cat([a for _, a, _ in feats["train"]]).mean(0)
    with torch.no_grad():
        for split in ("train", "heldout"):
            f = torch.cat([x for x, _, _ in feats[split]])
            a = torch.cat([y for _, y, _ in feats[split]])
            result[f"action_mse_{split}"] = float((agent.actor(f).mean - a).pow(2).mean())
            result[f"action_mse_{split}_mean_baseline"] = float((mean_action - a).pow(2).mean())
        # Copycat check: the expert's actions are smooth, and the latent state carries the previous action.
        # If the error jumps when the filter sees zeros instead of the actions, the actor copies its history.
        f0 = torch.cat([agent.episode_features(ep, zero_actions=True)[0] for ep in heldout])
        a0 = torch.cat([y for _, y, _ in feats["heldout"]])
        result["action_mse_heldout_actions_zeroed"] = float((agent.actor(f0).mean - a0).pow(2).mean())
        # The closed-loop error: the held-out images filtered with the actor's own actions.
        fa = torch.cat([acting_features(agent, ep) for ep in heldout])
        result["action_mse_heldout_acting"] = float((agent.actor(fa).mean - a0).pow(2).mean())
        result["action_mse_heldout_previous_action_baseline"] = float(np.mean(
            [np.square(ep["action"][2:] - ep["action"][1:-1]).mean() for ep in heldout]))

    # 3. A fresh discriminator on the frozen features (expert vs the policy's frames), held out.
    def pairs(items):
        return torch.cat([torch.cat([f, a], -1) for f, a, _ in items])

    half = len(feats["policy"]) // 2
    train_e, test_e = pairs(feats["train"]), pairs(feats["heldout"])
    train_p, test_p = pairs(feats["policy"][:half]), pairs(feats["policy"][half:])
    result["feature_centred_norm"] = float((train_e - train_e.mean(0)).norm(dim=1).mean())
    result["feature_dim_std_mean"] = float(train_e.std(0).mean())
    disc = {}
    for noise in sorted({0.0, 0.3, cfg.agent.disc_noise_std}):
        for std in (False, True):
            disc[f"noise{noise:g}{'_std' if std else ''}"] = fresh_disc_accuracy(
                train_e, train_p, test_e, test_p, noise, std, cfg.agent.disc_units)
    result["fresh_disc_heldout_acc"] = disc
    result["disc_probe"] = disc_probe(agent, heldout, policy_eps)

    # 4. Disagreement by action source.
    def stack(items, n=400):
        states = {k: torch.cat([s[k] for _, _, s in items]) for k in ("deter", "stoch", "mean", "std")}
        acts = torch.cat([a for _, a, _ in items])
        idx = torch.randperm(len(acts))[:n]
        return {k: v[idx] for k, v in states.items()}, acts[idx]

    s_e, a_e = stack(feats["heldout"])
    s_p, _ = stack(feats["policy"])
    result["disagreement_expert_states"] = disagreement_by_action(agent, s_e, a_e, cfg.agent.horizon)
    result["disagreement_policy_states"] = disagreement_by_action(agent, s_p, None, cfg.agent.horizon)

    # 5. The actor's gradient split over a few online updates (replay = the policy's episodes).
    replay = SequenceReplay(cfg.seq_len, seed=cfg.seed + 1, cover_edges=cfg.cover_edges)
    for ep in policy_eps:
        replay.add_episode(ep)
    ms = [agent.update(expert, replay) for _ in tqdm(range(args.updates), desc="updates", leave=False)]
    keys = ("train/actor_grad_rl", "train/actor_grad_bc", "train/actor_grad_cos", "train/imag_reward",
            "train/q_mean", "train/imag_return", "disc/expert_prob", "disc/policy_prob", "train/actor_std")
    result["online"] = {k: float(np.mean([m[k] for m in ms])) for k in keys}
    result["online"]["rl_to_bc_ratio"] = result["online"]["train/actor_grad_rl"] / max(
        result["online"]["train/actor_grad_bc"], 1e-12)
    result["wall_s"] = round(time.time() - t0, 1)
    result["commit"] = source_commit()
    result["config"] = {k: v for k, v in flatten(cfg).items() if not k.startswith("dac.")}
    out = Path(args.out) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    if args.save:  # the pretrained agent (before the online probe updates), for further offline checks
        torch.save(pretrained, out.with_suffix(".pt"))
    print_report(result)
    print(f"written: {out}")


def _restore_agent(run: Path, checkpoint: Path, action_dim: int, cfg=None) -> CMIL:
    """A run's CMIL agent at `checkpoint`, on the CPU; built from `cfg` when given (the run's config changed
    for a measurement), else from the run's config.yaml."""
    from cmil.launch import load_config
    from cmil.runs import restore

    agent = CMIL(cfg or load_config(run / "config.yaml"), action_dim, torch.device("cpu"))
    restore(torch.load(checkpoint, map_location="cpu", weights_only=False), agent.modules())
    return agent


@torch.no_grad()
def reward_parts(agent: CMIL, episodes: list[dict], windows: int = 16) -> dict[str, float]:
    """How much each part of the imagined reward (eq. 10) varies: D's logit and alpha x the (normalised, with
    agent.penalty_norm) disagreement, over the steps imagined from `windows` replay windows of `episodes`."""
    cfg = agent.cfg
    replay = SequenceReplay(cfg.seq_len, seed=0)
    for ep in episodes:
        replay.add_episode(ep)
    _, post, _ = agent.wm.loss(batch_to_torch(replay.sample(windows), agent.device))
    start = {k: v.flatten(0, 1) for k, v in post.items() if k in STATE_KEYS}
    feats, actions, disagreement, _ = agent.imagine(start, cfg.agent.horizon)
    logit = agent.imitation.logit(feats[:-1], actions[:-1])
    penalty = agent.imitation.penalty(disagreement, update_stats=False)
    return {"d_logit_mean": float(logit.mean()), "d_logit_std": float(logit.std()),
            "penalty_mean": float(penalty.mean()), "penalty_std": float(penalty.std()),
            "raw_disagreement_mean": float(disagreement.mean()), "raw_disagreement_std": float(disagreement.std())}


def disc_probe_runs(runs: list[Path], heldout: list[dict], out: Path) -> None:
    rows = []
    for run in runs:
        checkpoint = sorted((run / "checkpoints").glob("step_*.pt"))[-1]
        agent = _restore_agent(run, checkpoint, heldout[0]["action"].shape[-1])
        policy_eps = load_episodes(run / "episodes")[-30:]
        row = {"run": run.name, "checkpoint": checkpoint.name,
               "policy_success_last30": demo_success_rate(policy_eps),
               **disc_probe(agent, heldout, policy_eps), **disc_action_probe(agent, heldout),
               "reward_parts": reward_parts(agent, policy_eps)}
        rows.append(row)
        print(f"== {run.name} {checkpoint.name}: success of its last 30 episodes {row['policy_success_last30']:.2f}")
        print_disc_probe(row)
        print("imagined reward parts     " + ", ".join(f"{k} {v:.3f}" for k, v in row["reward_parts"].items()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"disc_probe": rows}, indent=2))
    print(f"written: {out}")


def checkpoint_errors(runs: list[Path], demos: list[dict], heldout: list[dict], out: Path) -> None:
    """Action error (per dimension) of every checkpoint of each run, on expert states it trained on and held out."""
    rows = []
    for run in runs:
        for path in sorted((run / "checkpoints").glob("step_*.pt")):
            agent = _restore_agent(run, path, demos[0]["action"].shape[-1])
            row = {"run": run.name, "checkpoint": path.name, "action_mse_train": action_error(agent, demos),
                   "action_mse_heldout": action_error(agent, heldout)}
            rows.append(row)
            print(f"{row['run']:40s} {row['checkpoint']:20s} train {row['action_mse_train']:.4f}  "
                  f"held-out {row['action_mse_heldout']:.4f}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"checkpoints": rows}, indent=2))
    print(f"written: {out}")


def bc_reference(cfg, env, demos, heldout, expert, args, name, t0) -> None:
    """The same success and held-out action error for pixel BC, the baseline the pretrained CMIL
    policy must reach (so that 'action MSE x' can be read as 'about BC-level' or not)."""
    from cmil.data.replay import demo_pairs
    from cmil.methods.bc import BC

    bc = BC(replace(cfg, method="bc"), env.action_space.shape[0], torch.device("cpu"))
    with tqdm(total=bc.pretrain_steps(), desc="bc", leave=False) as bar:
        bc.pretrain(expert, bar.update)
    policy = bc.policy()
    eps = recorded_rollouts(env, lambda o: policy.act(o, True), policy.reset, range(EVAL_SEED, EVAL_SEED + args.episodes))
    env.close()
    held = SequenceReplay(cfg.seq_len)
    for ep in heldout:
        held.add_episode(ep)
    images, actions = demo_pairs(held)
    train_actions = demo_pairs(expert)[1]
    with torch.no_grad():
        pred = bc.net(torch.as_tensor(images))
    result = {"name": name, "method": "bc", "seed": cfg.seed, "bc_steps": cfg.bc.steps,
              "success": demo_success_rate(eps),
              "action_mse_heldout": float((pred - torch.as_tensor(actions)).pow(2).mean()),
              "action_mse_heldout_mean_baseline": float(
                  (torch.as_tensor(train_actions).mean(0) - torch.as_tensor(actions)).pow(2).mean()),
              "wall_s": round(time.time() - t0, 1)}
    out = Path(args.out) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"== pixel BC reference (seed {cfg.seed}): success {result['success']:.2f}, held-out action MSE "
          f"{result['action_mse_heldout']:.4f} (mean-action baseline {result['action_mse_heldout_mean_baseline']:.4f})")
    print(f"written: {out}")


def print_report(r: dict) -> None:
    print(f"== {r['name']} (preset {r['preset']}, seed {r['seed']}, commit {r['commit']}): "
          f"pretrain {r['pretrain_s']:.0f} s, total {r['wall_s']:.0f} s")
    print(f"pretrained success        {r['pretrained_success']:.2f}  (return {r['pretrained_return']:.1f})")
    print(f"action MSE held-out       {r['action_mse_heldout']:.4f}  (mean-action baseline "
          f"{r['action_mse_heldout_mean_baseline']:.4f}; train {r['action_mse_train']:.4f})")
    print(f"action MSE acting         {r['action_mse_heldout_acting']:.4f}  (held-out images filtered with the "
          f"actor's own actions, as in closed loop)")
    print(f"copycat check             held-out MSE {r['action_mse_heldout_actions_zeroed']:.4f} with the filter's "
          f"actions zeroed (repeat-previous-action baseline {r['action_mse_heldout_previous_action_baseline']:.4f})")
    print("fresh disc held-out acc   " + ", ".join(f"{k} {v:.2f}" for k, v in r["fresh_disc_heldout_acc"].items()))
    if "disc_probe" in r:
        print_disc_probe(r["disc_probe"])
    print(f"feature scale             centred norm {r['feature_centred_norm']:.2f}, mean per-dim std "
          f"{r['feature_dim_std_mean']:.3f}")
    for key in ("disagreement_expert_states", "disagreement_policy_states"):
        print(f"{key:26s}" + ", ".join(f"{k} {v:.4f}" for k, v in r[key].items()))
    o = r["online"]
    print(f"actor grad (online)       RL {o['train/actor_grad_rl']:.2f}, beta*BC {o['train/actor_grad_bc']:.2f}, "
          f"ratio {o['rl_to_bc_ratio']:.2f}, cos {o['train/actor_grad_cos']:+.2f}")
    print(f"online scale              reward {o['train/imag_reward']:.3f}, Q {o['train/q_mean']:.2f}, "
          f"D(expert) {o['disc/expert_prob']:.2f}, D(policy) {o['disc/policy_prob']:.2f}, "
          f"actor std {o['train/actor_std']:.3f}")


def print_disc_probe(probe: dict) -> None:
    print("agent's D, mean prob      " + ", ".join(f"{k[2:]} {v:.2f}" for k, v in probe.items() if k.startswith("D/")))
    for k, v in probe.items():
        if k.startswith("fresh/"):
            print(f"fresh D (no noise)        {k[6:]}: {v:.2f}")
        elif k.startswith("D_action/"):
            shown = f"{v:.3f}" if isinstance(v, float) else " ".join(f"{x:+.3f}" for x in v)
            print(f"D at expert states        {k[9:]}: {shown}")


if __name__ == "__main__":
    sys.exit(main())
