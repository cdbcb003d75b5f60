"""Continue a pretrained CMIL run online with other agent settings (issue 9, round 20).

    python benchmarks/continue_online.py SOURCE DEST [--env-steps 8000] [--set agent.FIELD=VALUE ...]
                                         [--fresh 100] [--fresh-seed 30000]

SOURCE is a CMIL run trained with `--env-steps 0` and no full pretraining updates (`pretrain_updates` 0, as the `default`
preset): its BC phase and seed episodes, no online update. DEST becomes a copy of it whose config has the given agent
fields set (only those that act from the first online update on: `ONLINE_ONLY`, so the copy's pretraining is exactly
the one that recipe would have had) and `--env-steps`; then the copy resumes as
`cmil train` resumes a run, to the new budget. Several online recipes can so be compared from one pretrained policy,
at the online phase's cost only (~11-13 min at `default` sizes here instead of ~25). With `--fresh N` the final policy
is then scored on N placements no run has seen (`cmil eval DEST --episodes N --seed FRESH_SEED`).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from cmil.config import replace
from cmil.config_io import load_config, save_config, validate
from cmil.errors import UsageError
from cmil.launch import evaluate_run, train
from diagnose_cmil import parse_sets

# The agent fields that act only from the first online update on when the pretraining ran no full update
# (pretrain_updates 0): the BC phase trains the world model and the actor's BC term only, so the discriminator,
# reward, critics and the RL objective are untouched by it. Not here: the BC term's and the actor's fields (the BC
# phase reads them), the networks' sizes (the checkpoint fixes them), and anchor_weight (its copy is taken when the
# pretraining ends, which the source has already passed).
ONLINE_ONLY = {f"agent.{name}" for name in (
    "alpha", "beta", "reward", "disc_noise_std", "disc_lr", "disc_grad_penalty", "disc_policy_pairs", "disc_states",
    "disc_input_norm", "penalty_norm", "return_norm", "critic_lr", "critic_action_grad", "critic_target",
    "real_critic_loss", "actor_objective", "stop_grad_actor_input", "horizon", "gamma", "lam", "entropy",
    "target_update_every", "imag_from", "imag_starts")}


def continue_online(source: Path, dest: Path, env_steps: int, sets: dict) -> None:
    cfg = load_config(source / "config.yaml")
    if cfg.method != "cmil" or cfg.env_steps != 0:
        raise UsageError(f"{source}: not a pretrain-only CMIL run (method {cfg.method}, env_steps {cfg.env_steps}; "
                         "train it with --env-steps 0)")
    if cfg.pretrain_updates:
        raise UsageError(f"{source}: its pretraining ran {cfg.pretrain_updates} full updates, which every agent field "
                         "shaped; only a run with pretrain_updates 0 (the BC phase alone) can be continued otherwise")
    other = sorted(k for k in sets if k not in ONLINE_ONLY)
    if other:
        raise UsageError(f"--set {other[0]}: not a field that acts only online (the pretraining read it, or the "
                         f"checkpoint fixes it); one of: {', '.join(sorted(ONLINE_ONLY))}")
    if dest.exists():
        raise UsageError(f"{dest} exists; choose a new directory")
    cfg = replace(cfg, env_steps=env_steps, run_dir=str(dest.resolve()), **sets)
    validate(cfg, "--set")
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("eval"))  # the source's evaluations are not DEST's
    save_config(cfg, dest / "config.yaml")
    train(cfg, dest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--env-steps", type=int, default=8_000, help="online budget of the copy")
    parser.add_argument("--set", action="append", default=[], metavar="agent.FIELD=VALUE")
    parser.add_argument("--fresh", type=int, default=0, help="then score the final policy on this many placements")
    parser.add_argument("--fresh-seed", type=int, default=30_000)
    args = parser.parse_args()
    continue_online(args.source, args.dest, args.env_steps, parse_sets(args.set))
    if args.fresh:
        metrics = evaluate_run(args.dest, episodes=args.fresh, seed=args.fresh_seed, video_episodes=0)
        print(f"{args.dest}: success {metrics.get('eval/success_rate')} on {args.fresh} placements from {args.fresh_seed}")


if __name__ == "__main__":
    main()
