"""Learning benchmark (issue 4): BC, VMAIL and CMIL on the default task, same demos, same env-step budget.

    python benchmarks/compare_methods.py [--methods bc vmail cmil] [--seeds 0 1 2] [--parallel 2]
                                         [--root runs/compare] [--set env_steps=10000 ...]
                                         [--variant cmil-alpha0=cmil:agent.alpha=0 ...]

A variant is a named method with config overrides of its own (the ablations of issue 9); its runs
are labelled with its name and reported beside the methods. `{seed}` in an override's value is the
run's seed, e.g. `encoder_from=runs/compare/mw-push__bc__seed{seed}` (each seed's own BC run).

Each (method, seed) is an ordinary `cmil train` run directory under ROOT (rerunning skips finished
runs and resumes unfinished ones), run as a subprocess, `--parallel` at a time, each with
`--threads` torch threads. At the end `cmil plot` writes the learning curves (mean over seeds with
a 95% bootstrap band) and prints the table of final success rates with 95% bootstrap CIs.
With `--fresh N` every finished run's final policy is also evaluated on N placements that no run trains
or is evaluated on (`cmil eval RUN --episodes N --seed FRESH_SEED`; reused when RUN/eval/ has it): the
benchmark's 20 evaluation placements move a method by 0.05-0.15 against 100 others (docs/results.md,
rounds 15 and 17), so the fresh score, with its own CI, is the one to compare recipes by.
This script needs no Ray (`cmil sweep` does the same on a Ray cluster).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from cmil.data.episodes import episode_success
from cmil.launch import eval_result_path
from cmil.plot import report
from cmil.presets import PRESETS
from cmil.runs import read_metrics, source_commit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default=PRESETS["default"].task)
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS),
                        help="cmil train's preset for every run (e.g. 'long': the same recipe, 100K env steps)")
    parser.add_argument("--methods", nargs="*", default=["bc", "vmail", "cmil"],
                        help="methods with their preset's settings ('--methods' alone: only the --variant runs)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=METHOD[:FIELD=VALUE,...]",
                        help="a method with its own overrides, e.g. cmil-alpha0=cmil:agent.alpha=0")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--demos", default=None, help="demo directory (default: demos/{task})")
    parser.add_argument("--root", default="runs/compare")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="config override for every run, e.g. --set env_steps=5000")
    parser.add_argument("--json", default=None, help="summary JSON (default benchmarks/results/compare_methods.json)")
    parser.add_argument("--fresh", type=int, default=0, metavar="N",
                        help="also score each final policy on N fresh placements (0: off; docs/results.md uses 100)")
    parser.add_argument("--fresh-seed", type=int, default=30_000,
                        help="first fresh placement (away from the evaluations' 10000+ and the tuning runs' 20000+)")
    parser.add_argument("--report-only", action="store_true",
                        help="start no run: summarise the finished runs among the requested ones")
    args = parser.parse_args()
    demos = args.demos or f"demos/{args.task}"
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    overrides = flags(args.set)
    kinds = {m: (m, []) for m in args.methods} | dict(parse_variant(v) for v in args.variant)
    if not kinds:
        parser.error("nothing to run: name --methods or a --variant")
    commit = source_commit()

    def run(label: str, seed: int) -> tuple[str, int, float]:
        method, extra = kinds[label]
        run_dir = root / f"{args.task}__{label}__seed{seed}"
        if (run_dir / "final.json").exists() or args.report_only:  # finished runs are reported as they are
            return run_dir.name, 0, 0.0
        cmd = [sys.executable, "-m", "cmil.cli", "train", "--preset", args.preset, "--method", method, "--task", args.task, "--seed", str(seed),
               "--demos", demos, "--run-dir", str(run_dir), "--threads", str(args.threads), "--device", args.device,
               *for_seed([*overrides, *flags(extra)], seed)]
        if not commit_file(run_dir).exists():  # the code that started the run (a resumed run keeps it)
            commit_file(run_dir).write_text(commit + "\n")
        start = time.time()
        with open(root / f"{run_dir.name}.log", "w") as log:
            code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        return run_dir.name, code, time.time() - start

    start = time.time()
    jobs = [(k, s) for k in kinds for s in args.seeds]
    with ThreadPoolExecutor(args.parallel) as pool:
        for name, code, wall in pool.map(lambda job: run(*job), jobs):
            print(f"{'ok    ' if code == 0 else 'FAILED'} {name} ({wall:.0f} s)", flush=True)
    print(f"all runs: {time.time() - start:.0f} s")
    if args.fresh:
        finished = [root / f"{args.task}__{k}__seed{s}" for k, s in jobs]
        finished = [r for r in finished if (r / "final.json").exists()]
        with ThreadPoolExecutor(args.parallel) as pool:
            for run_dir, score in zip(finished, pool.map(lambda r: fresh_score(r, args.fresh, args.fresh_seed),
                                                         finished), strict=True):
                print(f"fresh  {run_dir.name}: {score:.2f} over {args.fresh} placements", flush=True)
    write_summary_json(root, args, jobs, commit)
    done = [(root / f"{args.task}__{m}__seed{s}", m) for m, s in jobs
            if (root / f"{args.task}__{m}__seed{s}" / "metrics.jsonl").exists()]
    # A variant's rows carry its name (its config differs from its method's only by its overrides).
    report([d for d, _ in done], root / "summary", names={d: m for d, m in done if m not in args.methods})
    print((root / "summary" / "results.md").read_text())
    print(f"plots: {root / 'summary'}")


def flags(pairs: list[str]) -> list[str]:
    """['agent.alpha=0', 'agent.real_critic_loss=false'] -> ['--agent.alpha', '0', '--agent.no-real-critic-loss']
    (cmil train's flag spelling)."""
    out = []
    for kv in pairs:
        key, value = kv.split("=", 1)
        flag = key.replace("_", "-")
        if value.lower() in ("true", "false"):  # booleans are switches: --agent.x / --agent.no-x
            head, _, name = flag.rpartition(".")
            out.append(f"--{flag}" if value.lower() == "true" else f"--{head + '.' if head else ''}no-{name}")
        else:
            out += [f"--{flag}", value]
    return out


def for_seed(args: list[str], seed: int) -> list[str]:
    """The run's own flags: `{seed}` in any of them replaced by its seed."""
    return [arg.replace("{seed}", str(seed)) for arg in args]


def parse_variant(spec: str) -> tuple[str, tuple[str, list[str]]]:
    """'cmil-alpha0=cmil:agent.alpha=0,agent.beta=1' -> ('cmil-alpha0', ('cmil', ['agent.alpha=0', 'agent.beta=1']))."""
    name, _, rest = spec.partition("=")
    method, _, sets = rest.partition(":")
    if not name or not method:
        raise SystemExit(f"--variant {spec!r}: expected NAME=METHOD[:FIELD=VALUE,...]")
    return name, (method, [kv for kv in sets.split(",") if kv])


def fresh_score(run_dir: Path, episodes: int, seed: int) -> float:
    """The run's final policy on `episodes` placements from `seed` on (evaluated once; later calls read it)."""
    path = eval_result_path(run_dir, episodes, seed)
    if not path.exists():
        subprocess.run([sys.executable, "-m", "cmil.cli", "eval", str(run_dir), "--episodes", str(episodes),
                        "--seed", str(seed), "--video-episodes", "0"], check=True, stdout=subprocess.DEVNULL)
    return json.loads(path.read_text())["eval/success_rate"]


def commit_file(run_dir: Path) -> Path:
    """Beside the run directory, not in it: `cmil train` refuses a non-empty directory that is not a run."""
    return run_dir.parent / f"{run_dir.name}.commit"


def run_record(run_dir: Path, fresh: tuple[int, int] | None = None) -> dict:
    """Per-run facts for the JSON summary: final success, wall time, curve, pretrained-policy success, and
    with `fresh` (episodes, first seed) the final policy's success on those fresh placements if evaluated."""
    final = json.loads((run_dir / "final.json").read_text())
    rows = read_metrics(run_dir)
    evals = [(r["env_step"], r["eval/success_rate"]) for r in rows if "eval/success_rate" in r]
    record = {"seed": final["seed"], "final_success": final["success_rate"], "final_return": final["return"],
              "episodes": final["episodes"], "wall_time_s": final.get("wall_time_s"), "evaluations": evals,
              "best_evaluation": max((s for _, s in evals), default=None)}
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    record["evaluation_episodes"] = [cfg["eval_episodes"]] * (len(evals) - 1) + [final["episodes"]]
    if len(evals) > 1 and evals[0][0] == 0:  # an online method's evaluation before its first env step
        record["pretrained_success"] = evals[0][1]
    if (run_dir / "episodes").is_dir():
        record["training_episode_success"] = training_episode_curve(run_dir / "episodes", cfg["eval_every"])
    record["commit"] = commit_file(run_dir).read_text().strip() if commit_file(run_dir).exists() else None
    if fresh and (scored := eval_result_path(run_dir, *fresh)).exists():
        record["fresh_success"] = json.loads(scored.read_text())["eval/success_rate"]
    return record


def training_episode_curve(episodes: Path, bin_steps: int) -> list[list[float]]:
    """[first env step of the bin, episodes, success rate] of the run's own online episodes (sampled actions,
    seed episodes included) per `bin_steps` env steps, binned by the env step each episode ends at. With ~100
    episodes a bin where an evaluation has 20, it shows a slow drift that the evaluations' noise hides."""
    import numpy as np

    bins: dict[int, list[bool]] = {}
    steps = 0
    for path in sorted(episodes.glob("*.npz")):
        with np.load(path) as ep:
            steps += len(ep["action"]) - 1          # action[0] is the placeholder before the first frame
            bins.setdefault((steps - 1) // bin_steps, []).append(episode_success(ep))
    return [[b * bin_steps, len(v), float(np.mean(v))] for b, v in sorted(bins.items())]


def write_summary_json(root: Path, args, jobs, commit: str) -> None:
    """benchmarks/results/compare_methods.json: every run's per-seed numbers and the commit that wrote it
    (each run also names the commit that started it)."""
    import numpy as np

    from cmil.stats import bootstrap_ci, final_over_best_if_constant

    methods: dict[str, dict] = {}
    for method, seed in jobs:
        run_dir = root / f"{args.task}__{method}__seed{seed}"
        if (run_dir / "final.json").exists():
            methods.setdefault(method, {"runs": []})["runs"].append(
                run_record(run_dir, (args.fresh, args.fresh_seed) if args.fresh else None))
    for name, entry in methods.items():
        finals = [r["final_success"] for r in entry["runs"]]
        ci = bootstrap_ci(finals)
        entry.update({"mean_final_success": ci.mean, "ci95": [ci.low, ci.high]})
        if args.fresh and all("fresh_success" in r for r in entry["runs"]):
            fresh = bootstrap_ci([r["fresh_success"] for r in entry["runs"]])
            entry.update({"fresh_placements": {"episodes": args.fresh, "first_seed": args.fresh_seed},
                          "mean_fresh_success": fresh.mean, "fresh_ci95": [fresh.low, fresh.high]})
            print(f"{name}: final policies on {args.fresh} fresh placements {fresh.mean:.2f} "
                  f"[{fresh.low:.2f}, {fresh.high:.2f}]")
        if all("pretrained_success" in r for r in entry["runs"]):
            entry["mean_pretrained_success"] = float(np.mean([r["pretrained_success"] for r in entry["runs"]]))
        bests = [r["best_evaluation"] for r in entry["runs"] if r["best_evaluation"] is not None]
        if bests:
            entry["final_over_best"] = float(np.mean(finals) / max(np.mean(bests), 1e-9))
            # What a policy that never changed, at the mean final success, would score on the same schedule.
            entry["final_over_best_if_constant"] = final_over_best_if_constant(
                float(np.mean(finals)), entry["runs"][0]["evaluation_episodes"])
    out = Path(args.json or "benchmarks/results/compare_methods.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"task": args.task, "preset": args.preset, "commit": commit, "root": str(root), "overrides": args.set,
                               "variants": args.variant, "methods": methods}, indent=2))
    print(f"summary: {out}")


if __name__ == "__main__":
    main()
