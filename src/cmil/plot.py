"""`cmil plot RUN_DIR...`: learning curves with 95 % bootstrap bands and a results table.

Runs are grouped by task and method (read from each run's `config.yaml`); runs of one method whose
configs differ in other fields (say `agent.alpha`) become separate groups labelled with those
fields. For each group, every run's evaluation points are linearly interpolated onto a common
x grid (the union of the group's evaluation steps, restricted to the range every run covers), and
the plot shows the mean over runs with a percentile-bootstrap band over runs (`cmil.stats`).
A group whose runs evaluate at a single step (BC, which trains offline) is drawn as a flat line.

Outputs in `--out`: `{metric}.png` and `.svg` (one panel per task) and `results.md` / `results.csv`:
final success rate and return (final.json, else the last evaluation) with 95 % CIs, the expert's
success rate, and the environment steps at which the group's mean success curve first reaches
90 % of the expert's success rate.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cmil.config import Config
from cmil.config_io import flatten, flatten_dict
from cmil.errors import UsageError
from cmil.runs import read_metrics
from cmil.stats import CONFIDENCE, N_RESAMPLES, SEED, Interval, bootstrap_band, bootstrap_ci, first_crossing

SUCCESS, RETURN = "eval/success_rate", "eval/return"
DEFAULT_METRICS = (SUCCESS, RETURN)
FINAL_KEYS = {SUCCESS: "success_rate", RETURN: "return"}  # metric -> its final.json key
EXPERT_FRACTION = 0.9
# Config fields that never make two runs different experiments (so they never split a group).
NON_EXPERIMENT_FIELDS = {"seed", "run_dir", "demos", "init_from", "device", "threads", "video_episodes",
                         "log_every", "checkpoint_every", "keep_checkpoints"}
METHOD_ORDER = ("cmil", "vmail", "dac", "bc")
MAX_GRID = 200


@dataclass
class Run:
    path: Path
    config: dict[str, Any]  # flattened: {'task': ..., 'agent.alpha': ...}
    rows: list[dict[str, Any]]
    final: dict[str, Any] | None
    label: str = ""

    @property
    def task(self) -> str:
        return str(self.config.get("task"))

    @property
    def method(self) -> str:
        return str(self.config.get("method"))

    def curve(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(env steps, values) of `metric`, sorted; a step logged twice (resume, final eval) keeps its last value."""
        points: dict[int, float] = {}
        for row in self.rows:
            if metric in row:
                points[int(row["env_step"])] = float(row[metric])
        steps = np.array(sorted(points), dtype=np.float64)
        return steps, np.array([points[int(s)] for s in steps], dtype=np.float64)

    def final_value(self, metric: str) -> float | None:
        """The final evaluation (final.json) if the run finished, else its last logged value."""
        if self.final is not None and self.final.get(FINAL_KEYS.get(metric, "")) is not None:
            return float(self.final[FINAL_KEYS[metric]])
        _, values = self.curve(metric)
        return float(values[-1]) if len(values) else None

    def expert_success(self) -> float | None:
        if self.final is not None and self.final.get("expert_success_rate") is not None:
            return float(self.final["expert_success_rate"])
        _, values = self.curve("eval/expert_success_rate")
        return float(values[-1]) if len(values) else None


@dataclass
class Group:
    task: str
    label: str
    method: str
    runs: list[Run] = field(default_factory=list)


class RunsNotFound(UsageError, FileNotFoundError):
    """A path given to `cmil plot` is missing or holds no runs."""


def find_run_dirs(paths: list[str | Path]) -> list[Path]:
    """Each path is a run directory (has config.yaml) or a folder searched recursively for them."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise RunsNotFound(f"{p}: no such run directory")
        if (p / "config.yaml").exists():
            found.append(p)
        else:
            found += sorted(c.parent for c in p.rglob("config.yaml") if (c.parent / "metrics.jsonl").exists())
    return sorted(dict.fromkeys(found))


def load_run(path: Path) -> Run:
    # A field the saved config lacks (it was added after the run) reads as its default, as a resume reads it:
    # new fields default to the behaviour before them, so such a run is not labelled apart by its absence.
    config = {**flatten(Config()), **flatten_dict(yaml.safe_load((path / "config.yaml").read_text()) or {})}
    final_path = path / "final.json"
    final = json.loads(final_path.read_text()) if final_path.exists() else None
    return Run(path, config, read_metrics(path), final)


def label_runs(runs: list[Run], names: dict[Path, str] | None = None) -> None:
    """Label = the name given for the run's directory in `names` (e.g. a benchmark variant's), else the method plus
    the config fields that differ between the unnamed runs of the same task and method."""
    names = names or {}
    by_key: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        if run.path in names:
            run.label = names[run.path]
            continue
        by_key.setdefault((run.task, run.method), []).append(run)
    for group in by_key.values():
        keys = sorted({k for r in group for k in r.config} - NON_EXPERIMENT_FIELDS)
        varying = [k for k in keys if len({json.dumps(r.config.get(k)) for r in group}) > 1]
        for run in group:
            extra = ", ".join(f"{k}={run.config.get(k)}" for k in varying)
            run.label = f"{run.method} [{extra}]" if extra else run.method


def group_runs(runs: list[Run], names: dict[Path, str] | None = None) -> list[Group]:
    label_runs(runs, names)
    groups: dict[tuple[str, str], Group] = {}
    for run in runs:
        groups.setdefault((run.task, run.label), Group(run.task, run.label, run.method)).runs.append(run)
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(groups.values(), key=lambda g: (g.task, rank.get(g.method, len(rank)), g.label))


def common_curves(runs: list[Run], metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(x grid, values (n_runs, P)) on the x range every run covers; None if a run lacks the metric.

    A group whose runs cannot share a range (e.g. all evaluated at one step) gets a one-point grid
    holding each run's last value."""
    curves = [r.curve(metric) for r in runs]
    if any(len(x) == 0 for x, _ in curves):
        return None
    lo = max(x[0] for x, _ in curves)
    hi = min(x[-1] for x, _ in curves)
    if hi <= lo:
        return np.array([max(x[-1] for x, _ in curves)]), np.array([[y[-1]] for _, y in curves])
    grid = np.unique(np.concatenate([x[(x >= lo) & (x <= hi)] for x, _ in curves]))
    if len(grid) > MAX_GRID:
        grid = np.linspace(lo, hi, MAX_GRID)
    return grid, np.stack([np.interp(grid, x, y) for x, y in curves])


def _metric_name(metric: str) -> str:
    return metric.split("/", 1)[-1]


def _colours(groups: list[Group]) -> dict[str, Any]:
    import matplotlib

    palette = matplotlib.colormaps["tab10"].colors
    labels = list(dict.fromkeys(g.label for g in groups))
    return {label: palette[i % len(palette)] for i, label in enumerate(labels)}


def plot_metric(groups: list[Group], metric: str, out: Path) -> list[Path]:
    """One panel per task: mean over runs with the bootstrap band; the expert as a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(g.task for g in groups))
    colours = _colours(groups)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.0 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        flat: list[tuple[Group, np.ndarray]] = []
        xmax = 0.0
        for g in (g for g in groups if g.task == task):
            data = common_curves(g.runs, metric)
            if data is None:
                continue
            grid, values = data
            mean, low, high = bootstrap_band(values)
            label = f"{g.label} (n={len(g.runs)})"
            if len(grid) == 1:
                flat.append((g, np.array([mean[0], low[0], high[0]])))
                continue
            ax.plot(grid, mean, color=colours[g.label], label=label)
            ax.fill_between(grid, low, high, color=colours[g.label], alpha=0.2, linewidth=0)
            xmax = max(xmax, float(grid[-1]))
        for g, (mean, low, high) in flat:  # offline methods: flat over the whole axis
            ax.axhline(mean, color=colours[g.label], linestyle="--",
                       label=f"{g.label} (n={len(g.runs)}, one evaluation each)")
            ax.axhspan(low, high, color=colours[g.label], alpha=0.12, linewidth=0)
        if metric == SUCCESS:
            experts = [e for g in groups if g.task == task for r in g.runs if (e := r.expert_success()) is not None]
            if experts:
                ax.axhline(float(np.mean(experts)), color="black", linestyle=":", label="expert")
            ax.set_ylim(-0.03, 1.03)
        if xmax > 0:
            ax.set_xlim(0, xmax)
        ax.set_title(task)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(_metric_name(metric).replace("_", " "))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{_metric_name(metric)}.png", out / f"{_metric_name(metric)}.svg"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def _ci(values: list[float]) -> Interval | None:
    return bootstrap_ci(values) if values else None


def summarize(groups: list[Group], metrics: tuple[str, ...] = DEFAULT_METRICS) -> list[dict[str, Any]]:
    """One table row per group (see the module docstring for the columns)."""
    rows = []
    for g in groups:
        row: dict[str, Any] = {"task": g.task, "method": g.label, "seeds": len(g.runs),
                               "finished": sum(r.final is not None for r in g.runs)}
        for metric in dict.fromkeys((SUCCESS, RETURN, *metrics)):
            values = [v for r in g.runs if (v := r.final_value(metric)) is not None]
            ci = _ci(values)
            name = _metric_name(metric)
            row[f"{name}_mean"] = ci.mean if ci else math.nan
            row[f"{name}_low"] = ci.low if ci else math.nan
            row[f"{name}_high"] = ci.high if ci else math.nan
        experts = [e for r in g.runs if (e := r.expert_success()) is not None]
        expert = float(np.mean(experts)) if experts else math.nan
        row["expert_success_rate"] = expert
        row["steps_to_90pct_expert"] = math.nan
        data = common_curves(g.runs, SUCCESS)
        if data is not None and expert > 0:
            grid, values = data
            hit = first_crossing(grid, values.mean(0), EXPERT_FRACTION * expert)
            row["steps_to_90pct_expert"] = hit if hit is not None else math.nan
        steps = [r.final["env_steps"] for r in g.runs if r.final and "env_steps" in r.final]
        row["env_steps"] = float(np.mean(steps)) if steps else math.nan
        rows.append(row)
    return rows


def _fmt(x: float, digits: int = 2) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def write_table(rows: list[dict[str, Any]], out: Path, metrics: tuple[str, ...] = DEFAULT_METRICS) -> list[Path]:
    """results.csv (every column, full precision) and results.md (readable)."""
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "results.csv", out / "results.md"
    if rows:
        with csv_path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        csv_path.write_text("")
    names = [_metric_name(m) for m in dict.fromkeys((SUCCESS, RETURN, *metrics))]
    head = ["task", "method", "seeds (finished)"] + [f"final {n.replace('_', ' ')} [95% CI]" for n in names]
    head += ["expert success", f"env steps to {EXPERT_FRACTION:.0%} of expert", "env steps"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        digits = {n: (2 if "success" in n else 1) for n in names}
        cells = [r["task"], r["method"], f"{r['seeds']} ({r['finished']})"]
        cells += [f"{_fmt(r[f'{n}_mean'], digits[n])} [{_fmt(r[f'{n}_low'], digits[n])}, "
                  f"{_fmt(r[f'{n}_high'], digits[n])}]" for n in names]
        steps = r["steps_to_90pct_expert"]
        cells += [_fmt(r["expert_success_rate"]), "not reached" if math.isnan(steps) else f"{steps:.0f}",
                  _fmt(r["env_steps"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    note = (f"\nMeans over seeds; intervals: percentile bootstrap of the mean over seeds "
            f"({N_RESAMPLES} resamples, numpy seed {SEED}, {CONFIDENCE:.0%}). 'env steps to "
            f"{EXPERT_FRACTION:.0%} of expert': first evaluation step at which the mean success curve "
            f"reaches {EXPERT_FRACTION:.0%} of the expert's success rate.\n")
    md_path.write_text("\n".join(lines) + "\n" + note)
    return [md_path, csv_path]


def report(paths: list[str | Path], out: str | Path, metrics: tuple[str, ...] = DEFAULT_METRICS,
           names: dict[Path, str] | None = None) -> dict[str, Any]:
    """Load the runs under `paths`, write plots and tables into `out`; returns {'files', 'rows'}. `names` labels
    the runs of the given directories (a benchmark's variants) instead of `label_runs`' method + differing fields."""
    out = Path(out)
    runs = [load_run(p) for p in find_run_dirs(paths)]
    if not runs:
        raise RunsNotFound(f"no run directories (config.yaml + metrics.jsonl) under {', '.join(map(str, paths))}")
    groups = group_runs(runs, {Path(k): v for k, v in (names or {}).items()})
    files: list[Path] = []
    for metric in metrics:
        files += plot_metric(groups, metric, out)
    rows = summarize(groups, metrics)
    files += write_table(rows, out, metrics)
    return {"files": files, "rows": rows}


def cmd_plot(args: argparse.Namespace) -> int:
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out: {args.out} exists and is not a directory")
    metrics = tuple(args.metric) if args.metric else DEFAULT_METRICS
    result = report(args.run_dirs, args.out, metrics)
    print((Path(args.out) / "results.md").read_text())
    print("wrote " + ", ".join(str(p) for p in result["files"]))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("plot", help="learning curves (mean, 95%% bootstrap band) and a results table",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", help="run directories, or folders searched recursively for them")
    p.add_argument("--out", default="plots", help="output directory (default: plots)")
    p.add_argument("--metric", action="append", default=None,
                   help=f"metric to plot against env steps (repeatable; default: {' and '.join(DEFAULT_METRICS)})")
    p.set_defaults(func=cmd_plot)
