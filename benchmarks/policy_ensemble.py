"""Several trained runs acting as one policy: the mean of their actions (issue 9, round 33).

    python benchmarks/policy_ensemble.py runs/r32/bc_s100 runs/r32/bc_s101 ... [--episodes 100 --seed 30000]
        [--json J]

Round 32 found that which placements a policy solves depends on how well the 10 demos cover them, and that pixel BC
policies of different seeds fail on partly different placements. If their errors off the demos are partly independent,
the mean of their actions should solve more placements than any of them: a measurement of what averaging (a teacher
ensemble, say) could give before building it into a method. Every run must be of the same task; each acts on the same
frames, recurrent policies keep their own memory, and the mean action is clipped to [-1, 1]. Prints the ensemble's
success beside each member's saved `cmil eval` result on the same placements (when there is one) and writes the
per-episode record.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=30_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    parts = []
    for run in args.runs:   # one rendering env per process: each run's is closed before the next opens
        parts.append(open_policy(run.resolve()))
        parts[-1].env.close()
    tasks = {p.cfg.task for p in parts}
    if len(tasks) != 1:
        raise SystemExit(f"the runs are of different tasks: {sorted(tasks)}")
    cfg = parts[0].cfg
    env = make_env(cfg.task, seed=cfg.seed, **env_options(cfg))
    members = {}
    for run in args.runs:
        saved = eval_result_path(run, args.episodes, args.seed)
        members[str(run)] = json.loads(saved.read_text()).get("eval/success_rate") if saved.exists() else None
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
