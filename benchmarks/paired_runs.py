"""Paired comparison of recipes, seed by seed (issue 9's diagnosis rounds): does a variant end above another?

    python benchmarks/paired_runs.py --source default=benchmarks/results/compare_methods.json:cmil \\
        --source h3='runs/r30/h3_s{seed}' --seeds 100 101 [--against default] [--fresh 100] [--evaluate] \\
        [--json benchmarks/results/diagnose/roundN/NAME.json]

A source is NAME=SPEC, SPEC either a compare_methods JSON and one of its methods (`FILE.json:METHOD`), or a
run-directory pattern with `{seed}` (a `cmil train` run per seed). Every source is read for each of `--seeds`:
the final success over the run's own evaluation placements, its evaluations, the pretrained policy's success
and the final policy on `--fresh` placements from `--fresh-seed` on (what `cmil eval RUN --episodes N --seed S`
wrote; `--evaluate` runs it where it is missing). The recipes differ by seed far more than by recipe (docs/
results.md, rounds 15-19), so what decides is each seed's difference from the `--against` source on the fresh
placements, with a percentile-bootstrap CI of its mean over seeds. Where `cmil eval` saved each episode, it also
says placement by placement how often a source and `--against` end alike (both succeed or both fail) and how often
only one succeeds. Prints a table and writes a JSON with every number and the commit each run recorded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cmil.launch import eval_result_path
from cmil.runs import read_metrics, source_commit
from cmil.stats import bootstrap_ci, final_over_best_if_constant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", action="append", required=True, metavar="NAME=SPEC",
                        help="FILE.json:METHOD (a compare_methods summary) or a run directory pattern with {seed}")
    parser.add_argument("--seeds", nargs="+", type=int, required=True)
    parser.add_argument("--against", default=None, help="the source every other is paired with (default: the first)")
    parser.add_argument("--fresh", type=int, default=100, help="fresh placements per final policy")
    parser.add_argument("--fresh-seed", type=int, default=30_000)
    parser.add_argument("--evaluate", action="store_true",
                        help="run `cmil eval` for a run directory's missing fresh score (minutes per run)")
    parser.add_argument("--metric", action="append", default=[], metavar="KEY",
                        help="a logged training metric (e.g. train/actor_grad_rl) to report, averaged over the last "
                             "third of each run-directory source's env steps")
    parser.add_argument("--json", default=None, help="where to write the comparison (default: print only)")
    args = parser.parse_args()
    sources = dict(split_source(s) for s in args.source)
    against = args.against or next(iter(sources))
    if against not in sources:
        parser.error(f"--against {against!r} is none of the sources {sorted(sources)}")
    runs = {name: [read_run(spec, seed, args.fresh, args.fresh_seed, args.evaluate, args.metric) for seed in args.seeds]
            for name, spec in sources.items()}
    result = compare(runs, against, args.seeds)
    result.update({"commit": source_commit(), "sources": sources,
                   "fresh_placements": {"episodes": args.fresh, "first_seed": args.fresh_seed}})
    print(table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")


def split_source(text: str) -> tuple[str, str]:
    name, sep, spec = text.partition("=")
    if not sep or not name or not spec:
        raise SystemExit(f"--source {text!r}: expected NAME=FILE.json:METHOD or NAME=RUN_DIR_WITH_{{seed}}")
    if "{seed}" not in spec and ".json:" not in spec:
        raise SystemExit(f"--source {text!r}: a run directory pattern needs {{seed}}; a summary needs FILE.json:METHOD")
    return name, spec


def read_run(spec: str, seed: int, fresh: int, fresh_seed: int, evaluate: bool, metrics: list[str]) -> dict:
    """One seed's record of a source: final success, evaluations, pretrained success, fresh score, commit, and for
    a run directory the `metrics`' means over its last third."""
    if "{seed}" not in spec:
        path, method = spec.rsplit(":", 1)
        summary = json.loads(Path(path).read_text())
        if method not in summary["methods"]:
            raise SystemExit(f"{path} has no method {method!r} (it has {sorted(summary['methods'])})")
        found = [r for r in summary["methods"][method]["runs"] if r["seed"] == seed]
        if not found:
            raise SystemExit(f"{path}: {method} has no run of seed {seed}")
        placements = summary["methods"][method].get("fresh_placements")
        record = dict(found[0])
        if placements != {"episodes": fresh, "first_seed": fresh_seed}:
            record.pop("fresh_success", None)  # scored on other placements: not comparable
        return record
    # A run directory: read as compare_methods reads its runs (a sibling script: benchmarks/ is on sys.path).
    from compare_methods import fresh_score, run_record

    run_dir = Path(spec.replace("{seed}", str(seed)))
    if not (run_dir / "final.json").exists():
        raise SystemExit(f"{run_dir} has not finished (no final.json)")
    if evaluate:
        fresh_score(run_dir, fresh, fresh_seed)
    record = run_record(run_dir, (fresh, fresh_seed))  # its commit: RUN.commit beside it, as compare_methods writes
    scored = eval_result_path(run_dir, fresh, fresh_seed)
    if scored.exists() and "episodes" in (saved := json.loads(scored.read_text())):  # `cmil eval` since 6650145
        record["fresh_episodes"] = [bool(ep["success"]) for ep in saved["episodes"]]
    if metrics:
        record["last_third"] = last_third(run_dir, metrics)
    return record


def last_third(run_dir: Path, keys: list[str]) -> dict[str, float | None]:
    """Each metric's mean over the rows logged in the last third of the run's env steps (None where never logged)."""
    rows = read_metrics(run_dir)
    end = max(r["env_step"] for r in rows)
    late = [r for r in rows if r["env_step"] > 2 * end / 3]
    return {k: (float(np.mean(v)) if (v := [r[k] for r in late if k in r]) else None) for k in keys}


def compare(runs: dict[str, list[dict]], against: str, seeds: list[int]) -> dict:
    """Each source's means with CIs, and each seed's difference from `against` with the CI of its mean."""
    out: dict = {"seeds": seeds, "against": against, "sources_summary": {}}
    for name, records in runs.items():
        finals = [r["final_success"] for r in records]
        entry = {"final": interval(finals), "per_seed_final": finals,
                 "evaluations": [[s for _, s in r["evaluations"]] for r in records],
                 "commits": sorted({str(r.get("commit")) for r in records}),
                 "wall_time_s": [r.get("wall_time_s") for r in records]}
        if all("last_third" in r for r in records):
            entry["last_third"] = [r["last_third"] for r in records]
        bests = [r["best_evaluation"] for r in records if r.get("best_evaluation") is not None]
        if len(bests) == len(records):
            entry["final_over_best"] = float(np.mean(finals) / max(np.mean(bests), 1e-9))
            entry["final_over_best_if_constant"] = final_over_best_if_constant(
                float(np.mean(finals)), records[0]["evaluation_episodes"])
        if all("pretrained_success" in r for r in records):
            entry["pretrained"] = float(np.mean([r["pretrained_success"] for r in records]))
        if all("fresh_success" in r for r in records):
            entry["per_seed_fresh"] = [r["fresh_success"] for r in records]
            entry["fresh"] = interval(entry["per_seed_fresh"])
        out["sources_summary"][name] = entry
    base = out["sources_summary"][against]
    for name, entry in out["sources_summary"].items():
        if name == against:
            continue
        for key in ("final", "fresh"):
            per_seed = f"per_seed_{key}"
            if per_seed in entry and per_seed in base:
                diffs = [a - b for a, b in zip(entry[per_seed], base[per_seed], strict=True)]
                entry[f"paired_{key}_vs_{against}"] = {"per_seed": diffs, **interval(diffs)}
        if all("fresh_episodes" in r for r in runs[name] + runs[against]):
            entry[f"placements_vs_{against}"] = placement_overlap(
                [r["fresh_episodes"] for r in runs[name]], [r["fresh_episodes"] for r in runs[against]])
    return out


def placement_overlap(these: list[list[bool]], others: list[list[bool]]) -> dict:
    """Placement by placement on the same fresh placements, seed by seed: how often both policies succeed, both fail,
    or only one does, averaged over seeds. Two recipes that differ only in luck agree on most placements when the
    placements themselves decide success; 'same_outcome' is both + neither."""
    a, b = np.array(these, bool), np.array(others, bool)
    if a.shape != b.shape:
        raise SystemExit(f"fresh placements differ in number: {a.shape} against {b.shape}")
    parts = {"both": a & b, "neither": ~a & ~b, "only_this": a & ~b, "only_against": ~a & b}
    out = {k: float(v.mean()) for k, v in parts.items()}
    out["same_outcome"] = out["both"] + out["neither"]
    return out


def interval(values: list[float]) -> dict:
    ci = bootstrap_ci(values)
    return {"mean": ci.mean, "ci95": [ci.low, ci.high]}


def table(result: dict) -> str:
    against = result["against"]
    lines = [f"seeds {result['seeds']}; paired differences against {against}",
             "| source | final per seed | final [95% CI] | fresh per seed | fresh [95% CI] | paired fresh | pretrained "
             "| fresh placements: same outcome (only this / only against) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, e in result["sources_summary"].items():
        fresh = e.get("fresh")
        paired = e.get(f"paired_fresh_vs_{against}")
        lines.append(" | ".join([
            f"| {name}", " / ".join(f"{v:.2f}" for v in e["per_seed_final"]), fmt(e["final"]),
            " / ".join(f"{v:.2f}" for v in e.get("per_seed_fresh", [])) or "-", fmt(fresh) if fresh else "-",
            (fmt(paired, signed=True) if paired else "-"),
            f"{e['pretrained']:.2f}" if "pretrained" in e else "-",
            (f"{o['same_outcome']:.2f} ({o['only_this']:.2f} / {o['only_against']:.2f})"
             if (o := e.get(f"placements_vs_{against}")) else "-")]) + " |")
    return "\n".join(lines)


def fmt(entry: dict, signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.2f}"
    return f"{f.format(entry['mean'])} [{f.format(entry['ci95'][0])}, {f.format(entry['ci95'][1])}]"


if __name__ == "__main__":
    main()
