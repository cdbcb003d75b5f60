"""`cmil sweep`: a grid of (task, method, overrides, seed) trials run as independent Ray tasks.

Each trial is an ordinary run directory under `--root`, named from its grid point
(`{task}__{method}__{overrides}__seed{N}`), so rerunning the same sweep finds it again:
finished trials (final.json for the same env-step budget) are skipped, unfinished ones resume from
their last checkpoint, and a run whose saved config differs from the requested one is reported as a
conflict instead of being silently mixed into the comparison. A failing trial is reported with its
error (traceback in `RUN/error.txt`) and does not stop the others. At the end `cmil plot`'s figures
and table are written to `ROOT/summary` (or `--out`) and the statuses to `ROOT/sweep.json`.

Ray is an optional dependency (`pip install 'cmil[sweep]'`), imported only when a sweep starts.
Without `--address` a private local Ray instance is started (and stopped); with it, trials go to that
cluster, whose nodes need cmil installed and the run root / demos on a shared file system.

Grid file (YAML; every key optional, flags given on the command line replace the file's values,
`--set` flags are merged into `set`)::

    preset: default
    tasks: [mw-drawer-open]
    methods: [cmil, vmail, dac, bc]
    seeds: [0, 1, 2]
    set: {env_steps: 20000}           # applied to every trial
    variants:                         # crossed with the grid; {} = no extra overrides
      - {}
      - {agent.alpha: 5}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

INSTALL_HINT = ("cmil sweep needs Ray, an optional dependency. Install it with\n"
                "  pip install 'cmil[sweep]'        (or: pip install 'ray[default]>=2.30,<3')")


# --- the grid -----------------------------------------------------------------------------------

def parse_set(items: list[str]) -> dict[str, Any]:
    """['agent.alpha=5', 'dry_run=true'] -> {'agent.alpha': 5, 'dry_run': True} (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _coerce(overrides: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """Check names against the config and give ints the float type of float fields (alpha=5 -> 5.0)."""
    unknown = sorted(set(overrides) - set(reference))
    if unknown:
        raise ValueError(f"unknown config fields {unknown} (see `cmil train --help`)")
    out = {}
    for key, value in overrides.items():
        ref = reference[key]
        if key == "env_kwargs" and isinstance(value, dict):  # YAML read the JSON object as a mapping
            value = json.dumps(value)
        if isinstance(ref, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        out[key] = value
    return out


def slug(overrides: dict[str, Any], dry_run: bool, preset: str) -> str:
    """A file-name-safe, deterministic description of the non-grid settings of a trial."""
    parts = ([f"preset={preset}"] if preset != "default" else []) + (["dry"] if dry_run else [])
    parts += [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in sorted(overrides.items())]
    text = re.sub(r"[^A-Za-z0-9._=+-]", "-", "+".join(parts)) or "default"
    if len(text) > 80:  # keep names readable and within file-name limits, still unique
        text = f"{text[:60]}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"
    return text


def build_trials(tasks: list[str], methods: list[str], seeds: list[int], overrides: dict[str, Any],
                 variants: list[dict[str, Any]], preset: str, dry_run: bool, root: Path,
                 demos: str, num_cpus: float, num_gpus: float) -> list[dict[str, Any]]:
    """One spec per grid point: name, run_dir, resolved config (as a dict) and demo directory."""
    from cmil.config import replace
    from cmil.config_io import flatten, to_dict, validate
    from cmil.envs import task_slug
    from cmil.launch import dry_run_demo_dir, dry_run_preset, resolve_paths
    from cmil.presets import PRESETS, apply_method, method_conflicts

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (one of {', '.join(sorted(PRESETS))})")
    base = PRESETS[preset]
    if dry_run:  # shrink the preset first, so explicit overrides still win (as `cmil train --dry-run`)
        base = dry_run_preset(base)
    reference = flatten(base)
    trials = []
    for task in tasks:
        for method in methods:
            for variant in variants or [{}]:
                extra = _coerce({**overrides, **variant}, reference)
                for seed in seeds:
                    settings = {"task": task, "method": method, "seed": int(seed),
                                "threads": max(1, int(num_cpus))}
                    if num_gpus > 0:
                        settings["device"] = "cuda"
                    cfg = apply_method(replace(base, **{**settings, **extra}))
                    validate(cfg)  # a bad value fails the whole sweep now, not each trial later
                    name = f"{task_slug(task)}__{method}__{slug(extra, dry_run, preset)}__seed{seed}"
                    run_dir = (root / name).resolve()
                    if not cfg.demos:  # a dry run without demos collects a few of its own, as `cmil train`
                        template = Path(demos.format(task=task_slug(task)))
                        missing = dry_run and not template.exists()
                        cfg = replace(cfg, demos=str(dry_run_demo_dir(run_dir) if missing else template))
                    cfg = resolve_paths(cfg, run_dir)
                    # A --set spans every method of the grid, so a value a method fixes (VMAIL's alpha = 0)
                    # gives way there, as a preset's would; the trial records it and the sweep says so.
                    trials.append({"name": name, "run_dir": str(run_dir), "config": to_dict(cfg),
                                   "overruled": method_conflicts(method, extra)})
    names = [t["name"] for t in trials]
    if len(set(names)) != len(names):
        raise ValueError("the grid has duplicate points (repeated tasks, methods, seeds or variants)")
    return trials


def overruled_notes(trials: list[dict[str, Any]]) -> list[str]:
    """One line per method and field where the method's fixed setting replaced the grid's value."""
    seen = sorted({(t["config"]["method"], k, repr(v)) for t in trials for k, v in t["overruled"].items()})
    return [f"sweep: {method} keeps {name}={value}, a setting of the method (presets.METHOD_OVERRIDES), "
            f"over the grid's value" for method, name, value in seen]


def load_grid(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    grid = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(grid, dict):
        raise ValueError(f"{path}: expected a mapping of grid keys, got {type(grid).__name__}")
    allowed = {"preset", "tasks", "methods", "seeds", "set", "variants"}
    unknown = sorted(set(grid) - allowed)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown} (allowed: {', '.join(sorted(allowed))})")
    return grid


# --- one trial (runs inside a Ray worker) ---------------------------------------------------------

def existing_state(config: dict[str, Any], run_dir: Path) -> tuple[str, Any]:
    """('new' | 'resume' | 'finished' | 'conflict', detail) by `cmil.launch.plan_run`'s one rule."""
    from cmil.config_io import from_dict
    from cmil.errors import UsageError
    from cmil.launch import plan_run

    try:
        plan = plan_run(from_dict({**config, "run_dir": str(run_dir)}))
    except UsageError as exc:
        return "conflict", str(exc)
    return plan.state, plan.result if plan.state == "finished" else ""


def run_trial(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one grid point (or skip it if finished); never raises: failures come back as a status."""
    os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco in this fresh worker
    start = time.time()
    run_dir = Path(spec["run_dir"])
    out: dict[str, Any] = {"name": spec["name"], "run_dir": str(run_dir)}
    try:
        from cmil.config_io import from_dict
        from cmil.launch import launch, plan_run

        plan = plan_run(from_dict(spec["config"]))
        if plan.state == "finished":
            return {**out, "status": "skipped", "result": plan.result, "wall_s": 0.0}
        result = launch(plan, quiet=True)
        return {**out, "status": "done", "result": result, "wall_s": round(time.time() - start, 1)}
    except Exception as exc:  # report, never crash the sweep
        from cmil.errors import UsageError

        tb = traceback.format_exc()
        if not isinstance(exc, UsageError) and (run_dir / "config.yaml").exists():
            try:  # a trial that failed its checks wrote nothing, and this keeps it so
                (run_dir / "error.txt").write_text(tb)
            except OSError:
                pass
        error = str(exc) if isinstance(exc, UsageError) else f"{type(exc).__name__}: {exc}"
        return {**out, "status": "failed", "error": error, "traceback": tb,
                "wall_s": round(time.time() - start, 1)}


# --- the sweep ------------------------------------------------------------------------------------

def _import_ray():
    try:
        import ray
    except ImportError:
        return None
    return ray


def _line(out: dict[str, Any]) -> str:
    if out["status"] in ("done", "skipped"):
        r = out["result"]
        if r.get("success_rate") is None:  # a task scored by its return only
            score = f"return {r['return']:.1f}"
        else:
            expert = r.get("expert_success_rate")
            score = f"success {r['success_rate']:.2f} (expert {'n/a' if expert is None else f'{expert:.2f}'})"
        return f"{out['status']:8s} {out['name']}: {score}, {r['env_steps']} env steps, {out['wall_s']:.0f} s"
    return f"FAILED   {out['name']}: {out['error']}"


def run_sweep(trials: list[dict[str, Any]], ray, address: str | None = None, num_cpus: float = 1.0,
              num_gpus: float = 0.0, cluster_cpus: int | None = None, echo=print) -> list[dict[str, Any]]:
    """Run the trials (finished ones are skipped without a worker); returns one status dict per trial."""
    results: list[dict[str, Any]] = []
    todo = []
    for spec in trials:
        state, detail = existing_state(spec["config"], Path(spec["run_dir"]))
        if state == "finished":
            results.append({"name": spec["name"], "run_dir": spec["run_dir"], "status": "skipped",
                            "result": detail, "wall_s": 0.0})
            echo(f"[{len(results)}/{len(trials)}] {_line(results[-1])}")
        else:
            todo.append(spec)
    if not todo:
        return results
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:  # a private instance: never attach to a cluster someone else started on this machine
            ray.init(address="local", num_cpus=cluster_cpus or os.cpu_count(), include_dashboard=False,
                     log_to_driver=False)
        started = True
    try:
        # max_calls=1: one trial per worker process (a fresh renderer and torch state for each).
        remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_calls=1, max_retries=0)(run_trial)
        pending = {remote.remote(spec): spec for spec in todo}
        echo(f"running {len(todo)} trials on Ray ({num_cpus:g} CPU{'s' if num_cpus != 1 else ''} each, "
             f"cluster: {ray.cluster_resources().get('CPU', 0):g} CPUs)")
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                spec = pending.pop(ref)
                try:
                    out = ray.get(ref)
                except Exception as exc:  # the worker died (OOM, segfault): Ray raises here
                    out = {"name": spec["name"], "run_dir": spec["run_dir"], "status": "failed",
                           "error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1]}", "wall_s": 0.0}
                results.append(out)
                echo(f"[{len(results)}/{len(trials)}] {_line(out)}")
    finally:
        if started:
            ray.shutdown()
    return results


def _checked_trials(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The grid's trials; every bad input (grid file, names, values, resources) is one UsageError."""
    from cmil.envs import task_spec
    from cmil.errors import UsageError
    from cmil.methods.base import method_classes

    if args.num_cpus <= 0 or args.num_gpus < 0 or (args.cluster_cpus is not None and args.cluster_cpus < 1):
        raise UsageError("--num-cpus must be > 0, --num-gpus >= 0 and --cluster-cpus >= 1")
    try:
        grid = load_grid(args.grid)
        tasks = args.tasks or grid.get("tasks")
        methods = args.methods or grid.get("methods")
        seeds = args.seeds if args.seeds is not None else grid.get("seeds", [0])
        if not tasks or not methods:
            raise ValueError("give --tasks and --methods (or a --grid file with them)")
        for task in tasks:
            task_spec(task)  # an unknown task is a UsageError naming the known ones
        known = sorted(method_classes())
        unknown = [n for n in methods if n not in known]
        if unknown:
            raise ValueError(f"unknown methods {unknown} (known: {', '.join(known)})")
        flags = {"env_kwargs": args.env_kwargs, "success_key": args.success_key,
                 "max_episode_steps": args.max_episode_steps, "action_repeat": args.action_repeat}
        overrides = {**(grid.get("set") or {}), **parse_set(args.set or []),
                     **{k: v for k, v in flags.items() if v is not None}}
        return build_trials(list(tasks), list(methods), [int(s) for s in seeds], overrides,
                            list(grid.get("variants") or [{}]), args.preset or grid.get("preset", "default"),
                            args.dry_run, Path(args.root), args.demos, args.num_cpus, args.num_gpus)
    except (ValueError, TypeError, OSError, yaml.YAMLError) as exc:
        raise UsageError(" ".join(str(exc).split())) from None


def cmd_sweep(args: argparse.Namespace) -> int:
    ray = _import_ray()
    if ray is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 3
    trials = _checked_trials(args)
    root = Path(args.root)
    print(f"sweep: {len(trials)} trials under {root}")
    for note in overruled_notes(trials):
        print(note)
    start = time.time()
    results = run_sweep(trials, ray, args.address, args.num_cpus, args.num_gpus, args.cluster_cpus)
    order = {t["name"]: i for i, t in enumerate(trials)}
    results.sort(key=lambda r: order[r["name"]])
    root.mkdir(parents=True, exist_ok=True)
    (root / "sweep.json").write_text(json.dumps(
        [{k: v for k, v in r.items() if k != "traceback"} for r in results], indent=2))
    failed = [r for r in results if r["status"] == "failed"]
    counts = {s: sum(r["status"] == s for r in results) for s in ("done", "skipped", "failed")}
    print(f"sweep finished in {time.time() - start:.0f} s: {counts['done']} done, {counts['skipped']} skipped "
          f"(already finished), {counts['failed']} failed")
    for r in failed:
        print(f"  failed: {r['name']}: {r['error']}  (see {r['run_dir']}/error.txt)")
    if not args.no_plot:
        runs = [r["run_dir"] for r in results if r["status"] != "failed" and (Path(r["run_dir"]) / "metrics.jsonl").exists()]
        if runs:
            from cmil.plot import report

            out = Path(args.out) if args.out else root / "summary"
            report(runs, out)
            print((out / "results.md").read_text())
            print(f"plots and table in {out}")
    return 1 if failed else 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="run a grid of trials (task x method x variant x seed) on Ray",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", default=None, help="YAML grid file (see above)")
    p.add_argument("--tasks", nargs="+", default=None)
    p.add_argument("--methods", nargs="+", default=None, help="cmil vmail bc dac")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0")
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                   help="config override for every trial, e.g. --set agent.alpha=5 (repeatable)")
    p.add_argument("--preset", default=None, help="config preset (default: default)")
    from cmil.cli import add_env_options

    add_env_options(p)  # for every trial
    p.add_argument("--root", default="runs/sweep", help="directory of the trials' run directories")
    p.add_argument("--demos", default="demos/{task}",
                   help="demo directory; {task} is replaced by the task's file name (default: demos/{task})")
    p.add_argument("--dry-run", action="store_true", help="tiny trials (as `cmil train --dry-run`)")
    p.add_argument("--address", default=None, help="address of an existing Ray cluster (default: a local instance)")
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per trial (also its torch threads)")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per trial (fractions share one GPU)")
    p.add_argument("--cluster-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--out", default=None, help="plots and table (default: ROOT/summary)")
    p.add_argument("--no-plot", action="store_true", help="skip the plots and table")
    p.set_defaults(func=cmd_sweep)
