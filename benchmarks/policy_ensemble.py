"""Several trained runs acting as one policy: the mean of their actions (issue 9, round 33).

    python benchmarks/policy_ensemble.py runs/r32/bc_s100 runs/r32/bc_s101 ... [--episodes 100 --seed 30000]
        [--json J]
    python benchmarks/policy_ensemble.py --members-of runs/r35/bench/bce3_s0 [--episodes 100 --seed 30000] [--json J]

Round 32 found that which placements a policy solves depends on how well the 10 demos cover them, and that pixel BC
policies of different seeds fail on partly different placements. If their errors off the demos are partly independent,
the mean of their actions should solve more placements than any of them: a measurement of what averaging (a teacher
ensemble, say) could give before building it into a method. Every run must be of the same task; each acts on the same
frames, recurrent policies keep their own memory, and the mean action is clipped to [-1, 1]. Prints the ensemble's
success beside each member's saved `cmil eval` result on the same placements (when there is one) and writes the
per-episode record. With `--members-of` it takes one `bc` run trained with `bc.members` > 1 (round 35) apart instead:
each member alone on the same placements, beside the run's saved ensemble score.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cmil.envs import make_env
from cmil.evaluate import evaluate
from cmil.launch import env_options, eval_result_path, open_policy
from cmil.methods.base import StatelessPolicy
from cmil.methods.bc import PolicyEnsemble
from cmil.runs import source_commit, write_json


class MeanPolicy:
    """The members' mean action on each frame."""

    def __init__(self, members):
        self.members = members

    def reset(self) -> None:
        for member in self.members:
            member.reset()

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return np.clip(np.mean([m.act(obs, deterministic) for m in self.members], 0), -1.0, 1.0)


def saved_success(run: Path, episodes: int, seed: int) -> float | None:
    """What `cmil eval RUN --episodes N --seed S` saved for the run, if it ran."""
    saved = eval_result_path(run, episodes, seed)
    return json.loads(saved.read_text()).get("eval/success_rate") if saved.exists() else None


def member_policies(method) -> list[StatelessPolicy]:
    """Each member of a `bc.members` ensemble as a policy of its own."""
    if not isinstance(getattr(method, "net", None), PolicyEnsemble):
        raise SystemExit("--members-of needs a `bc` run trained with bc.members > 1")
    return [StatelessPolicy(lambda image, _deterministic, m=m: m(image), method.device) for m in method.net.members]


def evaluate_members(run: Path, episodes: int, seed: int) -> dict:
    parts = open_policy(run.resolve())
    result: dict = {"run": str(run), "ensemble": saved_success(run, episodes, seed), "members": []}
    try:
        for k, policy in enumerate(member_policies(parts.method)):
            start = time.time()
            score = evaluate(parts.env, policy, episodes, seed=seed)["eval/success_rate"]
            result["members"].append(score)
            print(f"member {k}: success {score:.2f} over {episodes} placements, {time.time() - start:.0f} s", flush=True)
    finally:
        parts.env.close()
    ensemble = result["ensemble"]
    print(f"members' mean {np.mean(result['members']):.3f}; the ensemble (`cmil eval`): "
          f"{'-' if ensemble is None else f'{ensemble:.2f}'}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--members-of", type=Path, help="a `bc` run with bc.members > 1: evaluate each member alone")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=30_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.members_of is not None:
        if args.runs:
            parser.error("--members-of takes one run and no other runs")
        result = evaluate_members(args.members_of, args.episodes, args.seed)
        if args.json:
            write_json(args.json, {**result, "seed": args.seed, "episodes": args.episodes, "commit": source_commit()})
            print(f"wrote {args.json}")
        return
    if not args.runs:
        parser.error("name the runs to average, or --members-of RUN")
    parts = []
    for run in args.runs:   # one rendering env per process: each run's is closed before the next opens
        parts.append(open_policy(run.resolve()))
        parts[-1].env.close()
    tasks = {p.cfg.task for p in parts}
    if len(tasks) != 1:
        raise SystemExit(f"the runs are of different tasks: {sorted(tasks)}")
    cfg = parts[0].cfg
    env = make_env(cfg.task, seed=cfg.seed, **env_options(cfg))
    members = {str(run): saved_success(run, args.episodes, args.seed) for run in args.runs}
    start, episodes = time.time(), []
    result = evaluate(env, MeanPolicy([p.policy for p in parts]), args.episodes, seed=args.seed,
                      per_episode=episodes)
    env.close()
    for run, success in members.items():
        print(f"{run}: {'-' if success is None else f'{success:.2f}'}")
    print(f"mean of the {len(parts)} runs' actions: success {result['eval/success_rate']:.2f} over {args.episodes} "
          f"placements (seeds {args.seed}-{args.seed + args.episodes - 1}), {time.time() - start:.0f} s")
    if args.json:
        write_json(args.json, {"runs": members, "ensemble": result, "episodes": episodes, "seed": args.seed,
                               "commit": source_commit()})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
