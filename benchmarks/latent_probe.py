"""Does the world model's latent hold the object the action moves? World-model-only training on a fixed pool of
episodes, probed as it trains (issue 9, round 40).

    python benchmarks/latent_probe.py [--task point] [--preset default] [--set wm.FIELD=VALUE ...]
                                      [--updates 3000] [--every 500] [--episodes 100] [--heldout 40] [--seed 100]
                                      [--name NAME] [--out DIR]

Round 39 found that on `point` the agent's features do not say where the point is (ridge R^2 <= 0.09 after 1,600 to
9,000 online updates), so no imagined reward can be climbed. This isolates the world model from the agent: it
collects `--episodes` episodes of uniformly random actions (placements 40000.., wide coverage of where the point
goes) and `--heldout` more (placements 50000..), trains only the world model (`WorldModel.train_step`, the preset's
batch and window) on the first set, and every `--every` updates measures on the held-out set:
  - the ridge R^2 (state_probe.py's) of each true position from three readings of the filtered posterior: the
    stochastic state's mean (`stoch`, what the `default` agent reads), the GRU state h_t (`deter`), and the
    agent's feature under the recipe (`agent`); fit on the first set's features, scored on the held-out set's
    (at the last measurement also state_probe.py's MLP on `agent`, `agent_mlp`);
  - the reconstruction error (mean squared, in [-0.5, 0.5] units) on all pixels and on the pixels each
    `wm.recon_focus` picks ('change': those differing from the frame before or after; 'foreground': those
    differing from the median of all the held-out frames), and the KL to the prior before free nats;
  - on `point`, point_rl_sanity.py's `point_imagined_response`: whether one imagined step from the held-out states moves
    the point (as a ridge probe of the agent's feature reads it) the way each of 9 actions moves it (round 41), and
    the action held for five imagined steps (`imagined_response_held`, round 42); on
    Meta-World, state_probe.py's `hand_response` (the hand, with the agent's feature and with h_t).
Writes DIR/latent_probe_{name}.json (default DIR benchmarks/results/diagnose).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from cmil.config import replace
from cmil.data.replay import SequenceReplay, batch_to_torch
from cmil.envs import make_env
from cmil.evaluate import recorded_rollouts
from cmil.methods.cmil import CMIL
from cmil.models.networks import preprocess_image
from cmil.models.world_model import WorldModel, focus_pixels
from cmil.presets import PRESETS
from cmil.runs import source_commit
from diagnose_cmil import parse_sets
from point_rl_sanity import point_imagined_response
from state_probe import RESPONSE_STEPS, hand_response, mlp_r2, ridge_r2

# Columns of each task's stored state holding the positions probed.
POSITIONS = {"point": {"point": [0, 1], "goal": [2, 3]},
             "metaworld": {"hand": [0, 1, 2], "puck": [4, 5], "goal": [36, 37]}}


class _Reader:
    """What state_probe.hand_response reads of an agent: its world model, and an episode filtered by it."""

    episode_features = CMIL.episode_features

    def __init__(self, wm: WorldModel):
        self.wm, self.device = wm, torch.device("cpu")


def random_episodes(task: str, n: int, first_seed: int, image_size: int) -> list[dict]:
    env = make_env(task, seed=first_seed, image_size=image_size)
    rng = np.random.default_rng(first_seed)
    low, high = env.action_space.low, env.action_space.high
    episodes = recorded_rollouts(env, lambda obs: rng.uniform(low, high).astype(np.float32), lambda: None,
                                 range(first_seed, first_seed + n))
    env.close()
    return episodes


@torch.no_grad()
def readings(wm: WorldModel, episodes: list[dict]) -> tuple[dict, torch.Tensor, dict[str, float]]:
    """Each episode filtered by the world model from its first frame: the three readings of frames 0..T-1 stacked
    (and 'post', the posterior states there), the true states there, and the reconstruction errors (all pixels,
    `recon_focus`'s 'change' pixels of each episode and 'foreground' pixels against the median of all the episodes'
    frames) and the raw KL."""
    rows: dict[str, list] = {"stoch": [], "deter": [], "agent": []}
    errors, targets, changed, kl, posts = [], [], [], 0.0, []
    for ep in episodes:
        image, action, is_first = (torch.as_tensor(ep[k])[None] for k in ("image", "action", "is_first"))
        post, prior = wm.observe(wm.encode(image), action, is_first, sample=False)
        rows["stoch"].append(post["mean"][0, :-1])
        rows["deter"].append(post["deter"][0, :-1])
        rows["agent"].append(wm.agent_feat(post)[0, :-1])
        posts.append({k: v[0, :-1] for k, v in post.items()})
        target = preprocess_image(image)
        errors.append((wm.decode(wm.feat(post)) - target).square()[0])
        targets.append(target[0])
        changed.append(focus_pixels(target, "change")[0])
        kl += float(wm.kl_loss(post, prior)[1]) * image.shape[1]
    error, target = torch.cat(errors), torch.cat(targets)
    masks = {"change": torch.cat(changed), "foreground": focus_pixels(target[None], "foreground")[0]}
    states = torch.as_tensor(np.concatenate([ep["state"][:-1] for ep in episodes])).float()
    out = {"recon_mse": float(error.mean()), "kl_raw": kl / len(target)}
    out |= {f"recon_mse_{name}": float(error[mask].mean()) if mask.any() else 0.0 for name, mask in masks.items()}
    rows["post"] = {k: torch.cat([p[k] for p in posts]) for k in posts[0]}
    return {k: v if k == "post" else torch.cat(v).float() for k, v in rows.items()}, states, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="point")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--episodes", type=int, default=100, help="random-action episodes trained on")
    parser.add_argument("--heldout", type=int, default=40, help="random-action episodes probed")
    parser.add_argument("--mlp-steps", type=int, default=2000, help="steps of the last row's MLP probe")
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--name", default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/diagnose"))
    args = parser.parse_args()

    sets = parse_sets(args.set)
    cfg = replace(PRESETS[args.preset], task=args.task, seed=args.seed, **sets)
    torch.set_num_threads(cfg.threads or 1)
    torch.manual_seed(cfg.seed)
    positions = POSITIONS["point" if args.task == "point" else "metaworld"]
    train = random_episodes(args.task, args.episodes, 40_000, cfg.image_size)
    heldout = random_episodes(args.task, args.heldout, 50_000, cfg.image_size)
    replay = SequenceReplay(cfg.seq_len, seed=cfg.seed, cover_edges=cfg.cover_edges)
    for ep in train:
        replay.add_episode(ep)
    wm = WorldModel(train[0]["action"].shape[-1], cfg.wm, cfg.image_size)
    keys = ("image", "action", "is_first")

    name = args.name or ("_".join(f"{k}={v}" for k, v in sets.items()) or "base")
    start, rows = time.time(), []
    for step in range(1, args.updates + 1):
        batch = {k: v for k, v in replay.sample(cfg.batch_size).items() if k in keys}
        _, metrics = wm.train_step(batch_to_torch(batch))
        if step % args.every:
            continue
        wall = time.time() - start
        x_fit, s_fit, _ = readings(wm, train)
        x_test, s_test, errors = readings(wm, heldout)
        r2 = {reading: {pos: round(ridge_r2(x_fit[reading], s_fit[:, cols], x_test[reading], s_test[:, cols]), 3)
                        for pos, cols in positions.items()} for reading in ("stoch", "deter", "agent")}
        if step + args.every > args.updates:  # the last row: also an MLP, as nonlinear readings may hold more
            r2["agent_mlp"] = {pos: round(mlp_r2(x_fit["agent"], s_fit[:, cols], x_test["agent"], s_test[:, cols],
                                                 args.mlp_steps), 3) for pos, cols in positions.items()}
        row = {"updates": step, "train_wall_s": round(wall), "r2": r2,
               **{k: round(v, 5) for k, v in errors.items()}, "train_kl_raw": round(metrics["model/kl_raw"], 3)}
        if args.task == "point":  # does one imagined step move the point as the action does (round 41)
            row["imagined_response"], row["imagined_response_held"] = (
                point_imagined_response(wm, x_fit["agent"], s_fit, x_test["post"], x_test["agent"], s_test, held)
                for held in RESPONSE_STEPS)
        else:  # the hand, with the agent's feature and with h_t
            row["hand_response"] = [hand_response(_Reader(wm), train[:40], heldout, form, steps=held)
                                    for form in dict.fromkeys([cfg.wm.agent_feat, "mean"]) for held in RESPONSE_STEPS]
        rows.append(row)
        print(json.dumps(row), flush=True)
        start += time.time() - start - wall  # the probe's own time is not training time
    out = args.out / f"latent_probe_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"task": args.task, "preset": args.preset, "overrides": {k: str(v) for k, v in sets.items()},
                               "seed": cfg.seed, "episodes": args.episodes, "heldout": args.heldout,
                               "commit": source_commit(), "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
