"""One run lifecycle for `cmil train`, `cmil sweep` and `cmil eval`.

    plan_run(cfg)  validate the config, pick the run directory and decide its state by one rule:
                   new | resume | finished (a conflict is a UsageError); reads, never writes
    build(plan)    the parts the loop runs on (env, demos, replays, method, logger, checkpointer);
                   every check of user input (demos, the env's action dimension, --init-from) comes
                   before the first write, so a failed command leaves the file system as it was
    launch(plan)   the above plus the loop; a finished run returns its saved result
    open_policy    what `cmil eval` needs, read-only: the saved config, the env and the policy

The resume rule: every field of the saved config except `config.STEERING_FIELDS` must equal the
command's resolved value (the method included); steering fields take the command's value.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from cmil.config import STEERING_FIELDS, Config, replace
from cmil.config_io import flatten, load_config, resume_conflicts, save_config, validate
from cmil.data.episodes import Episode, demo_stats, episode_paths, load_episodes
from cmil.data.replay import SequenceReplay
from cmil.errors import UsageError
from cmil.evaluate import demo_success_rate
from cmil.methods.base import Method, Policy, make_method
from cmil.precision import resolve_precision
from cmil.presets import dry_run_config
from cmil.runs import Checkpointer, MetricLogger, default_run_dir, remove_stale_temp_files, restore

RunState = Literal["new", "resume", "finished"]


@dataclass(frozen=True)
class RunPlan:
    """A validated run: its resolved config, directory and state (`result`: final.json if finished)."""

    cfg: Config
    run_dir: Path
    state: RunState
    result: dict[str, Any] | None = None


@dataclass
class Parts:
    """Everything the training loop runs on, built and checked by `build`."""

    env: gym.Env
    expert: SequenceReplay
    replay: SequenceReplay
    method: Method
    logger: MetricLogger
    ckpt: Checkpointer
    np_rng: np.random.Generator
    expert_success: float | None
    """The expert's success rate (None: the task has no success signal)."""
    restored: tuple[Path, dict[str, Any]] | None
    """The checkpoint to resume from (None: a fresh start)."""


def say(msg: str, quiet: bool = False) -> None:
    if not quiet:
        tqdm.write(msg)


def warn(msg: str) -> None:
    """One line on stderr, even when quiet: it reports something the user should know."""
    tqdm.write(msg, file=sys.stderr)


# --- config and state --------------------------------------------------------------------------------

def env_kwargs_of(cfg: Config) -> dict[str, Any]:
    """The run's `env_kwargs` as a dict ({} when unset); `validate` has checked it."""
    return json.loads(cfg.env_kwargs) if cfg.env_kwargs is not None else {}


def canonical_env_kwargs(cfg: Config) -> Config:
    """`env_kwargs` in one spelling (sorted keys, no optional spaces), so that the same arguments
    written differently are the same run on resume."""
    if cfg.env_kwargs is None:
        return cfg
    return replace(cfg, env_kwargs=json.dumps(env_kwargs_of(cfg), sort_keys=True, separators=(",", ":")))


def env_options(cfg: Config) -> dict[str, Any]:
    """What `cmil.envs.make_env` needs, besides the task, to build the run's env."""
    return {"image_size": cfg.image_size, "env_kwargs": env_kwargs_of(cfg), "success_key": cfg.success_key,
            "max_episode_steps": cfg.max_episode_steps, "action_repeat": cfg.action_repeat}


def dry_run_preset(preset: Config) -> Config:
    """The preset shrunk for `--dry-run`, before explicit flags apply (so that they still win)."""
    return dry_run_config(replace(preset, dry_run=True))


def dry_run_demo_dir(run_dir: Path) -> Path:
    return run_dir / "demos"


# Fields that name another run directory to start from: resolved to absolute paths and checked for a checkpoint.
SOURCE_RUN_FIELDS = {"init_from": "initialise from", "encoder_from": "take an encoder from",
                     "anchor_from": "take the anchor's teacher policy from"}


def resolve_paths(cfg: Config, run_dir: Path) -> Config:
    """Absolute demos / run_dir and the SOURCE_RUN_FIELDS, so that a run compares and reloads alike from any directory.

    Demos default to demos/{task}; a dry run without demos there collects a few into RUN/demos."""
    from cmil.envs import task_slug

    demos = Path(cfg.demos) if cfg.demos else Path("demos") / task_slug(cfg.task)
    if cfg.dry_run and not cfg.demos and not demos.exists():
        demos = dry_run_demo_dir(run_dir)
    sources = {k: str(Path(v).resolve()) if (v := getattr(cfg, k)) else None for k in SOURCE_RUN_FIELDS}
    return replace(cfg, demos=str(demos.resolve()), run_dir=str(run_dir), **sources)


def _check_task_and_device(cfg: Config) -> None:
    from cmil.envs import task_spec

    try:
        task_spec(cfg.task)
    except UsageError as exc:
        raise UsageError(f"task: {exc}") from None
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device: {cfg.device!r} requested but CUDA is not available (use --device cpu)")


def _read_result(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "final.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # an unreadable final.json does not mark the run finished: it is resumed and rewritten


def plan_run(cfg: Config) -> RunPlan:
    """Validate `cfg` and decide what to do with its run directory. Reads only; raises UsageError."""
    validate(cfg)
    cfg = canonical_env_kwargs(cfg)
    _check_task_and_device(cfg)
    # `auto` becomes what this machine runs (fp32 | bf16), and config.yaml records that.
    cfg = replace(cfg, precision=resolve_precision(cfg.precision, resolve_device(cfg.device)))
    run_dir = (Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)).resolve()
    cfg = resolve_paths(cfg, run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"run_dir: {run_dir} exists and is not a directory")
    # Empty, or holding only the temporary file of a config.yaml whose write was interrupted: new.
    if not run_dir.exists() or all(p.name.startswith(".config.yaml.") for p in run_dir.iterdir()):
        _check_source_runs(cfg)
        return RunPlan(cfg, run_dir, "new")
    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        raise UsageError(f"run_dir: {run_dir} is not empty and is not a run (no config.yaml); "
                         "pick another --run-dir")
    saved = load_config(saved_path)
    # Older runs saved relative paths (relative to where they were started, as they were read then).
    saved = replace(saved, **{k: str(Path(v).resolve()) for k in ("demos", *SOURCE_RUN_FIELDS)
                              if (v := getattr(saved, k)) and not Path(v).is_absolute()})
    conflicts = resume_conflicts(saved, cfg)
    if conflicts:
        raise UsageError(f"{run_dir} is an existing run with other settings ({'; '.join(conflicts)}); "
                         "drop those flags to resume it, or pick another --run-dir")
    requested = flatten(cfg)
    cfg = replace(saved, **{k: requested[k] for k in STEERING_FIELDS})
    result = _read_result(run_dir)
    if result is not None and cfg.env_steps <= result.get("target_env_steps", -1):
        return RunPlan(cfg, run_dir, "finished", result)
    episodes = run_dir / "episodes"
    if not Checkpointer(run_dir).list() and episodes.is_dir() and any(episodes.glob("*.npz")):
        raise UsageError(f"{run_dir}: has online episodes but no checkpoints/ to resume them from; "
                         "restore the checkpoints or start a new run")
    return RunPlan(cfg, run_dir, "resume")


def _check_source_runs(cfg: Config) -> None:
    for name, use in SOURCE_RUN_FIELDS.items():
        if (source := getattr(cfg, name)) and not Checkpointer(Path(source)).list():
            raise UsageError(f"{name}: {source} has no checkpoint to {use}")


# --- demos -------------------------------------------------------------------------------------------

def load_demos(cfg: Config, action_dim: int) -> list[Episode]:
    """The first `num_demos` demos, validated against the run's image size and the env's action dimension."""
    directory = Path(cfg.demos)
    if not directory.exists():
        raise UsageError(f"demos: no demos at {directory}; collect them with `cmil demos collect --task "
                         f"{cfg.task} --episodes {cfg.num_demos} --out {directory}` or pass --demos DIR")
    available = len(episode_paths(directory))
    if available < cfg.num_demos:
        raise UsageError(f"num_demos: {directory} holds {available} episodes, fewer than num_demos "
                         f"{cfg.num_demos}; pass --num-demos {available} or collect more")
    _check_demo_env_options(cfg, directory)
    return load_episodes(directory, cfg.image_size, action_dim, limit=cfg.num_demos)


def _check_demo_env_options(cfg: Config, directory: Path) -> None:
    """Warn when the demos were collected with other env kwargs or another action repeat than the run's: some
    change what the expert's episodes look like (`placement_scale`, a camera, the control step), others only the
    run's own scoring (a success radius), so this is the user's call. The env each side built is compared, not
    the spelling (an action repeat given as a Meta-World env kwarg or as the option is the same env). Demo sets
    without that record (converted ones) pass silently."""
    stats = demo_stats(directory) or {}
    if "env_kwargs" not in stats:
        return
    from cmil.envs import effective_env_options

    demo_kwargs, demo_repeat = effective_env_options(cfg.task, stats["env_kwargs"], stats.get("action_repeat"))
    run_kwargs, run_repeat = effective_env_options(cfg.task, env_kwargs_of(cfg), cfg.action_repeat)
    if demo_kwargs != run_kwargs:
        warn(f"warning: the demos in {directory} were collected with env kwargs {json.dumps(demo_kwargs)}, this run "
             f"uses {json.dumps(run_kwargs)}; if that changes what the episodes show (e.g. "
             "placement_scale), collect demos with the run's")
    if demo_repeat != run_repeat:
        warn(f"warning: the demos in {directory} were collected with action repeat {demo_repeat}, this run uses "
             f"{run_repeat}: the expert's actions were held for another number of env steps; collect demos with "
             "the run's")


def _collect_dry_run_demos(cfg: Config) -> None:
    """A dry run's own few demos, in RUN/demos, collected as if before anything else: the torch RNG
    is put back afterwards, so the run goes on exactly as one whose demos were already there."""
    from cmil.data.collect import collect_demos

    torch_state = torch.get_rng_state()
    collect_demos(cfg.task, cfg.num_demos, Path(cfg.demos), seed=cfg.seed, keep_failures=True, quiet=True,
                  **env_options(cfg))
    torch.set_rng_state(torch_state)


def expert_success(directory: Path, demos: list[Episode], env: gym.Env) -> float | None:
    """The expert's success rate when the demos were collected (stats file), else the demos' own;
    None for a task without a success signal."""
    from cmil.envs import reports_success

    if not reports_success(env):
        return None
    stats = demo_stats(directory)
    if stats is not None:
        rate = stats.get("success_rate")
        return None if rate is None else float(rate)
    return demo_success_rate(demos)


# --- the parts ---------------------------------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def action_dim_of(env: gym.Env, task: str) -> int:
    space = env.action_space
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise UsageError(f"task {task!r}: action space {space} is not a flat Box, which every method needs")
    return int(space.shape[0])


def build(plan: RunPlan, quiet: bool = False) -> Parts:
    """Build and check every part, then (only then) create or update the run directory."""
    cfg, run_dir = plan.cfg, plan.run_dir
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
    torch.manual_seed(cfg.seed)
    np_rng = np.random.default_rng(cfg.seed)
    from cmil.envs import make_env
    from cmil.experts import has_expert

    env = make_env(cfg.task, seed=cfg.seed, **env_options(cfg))
    try:
        action_dim = action_dim_of(env, cfg.task)
        collect = cfg.dry_run and Path(cfg.demos) == dry_run_demo_dir(run_dir) and not Path(cfg.demos).exists()
        if collect and not has_expert(cfg.task):
            raise UsageError(f"demos: a dry run of {cfg.task!r} without --demos collects demos with the task's "
                             "expert, and it has none; pass --demos DIR")
        demos = None if collect else load_demos(cfg, action_dim)
        method = make_method(cfg, action_dim, resolve_device(cfg.device))
        ckpt = Checkpointer(run_dir, cfg.keep_checkpoints)
        if plan.state == "new" and cfg.init_from:
            _init_from(method, Path(cfg.init_from), quiet)
        if plan.state == "new" and cfg.encoder_from:
            load_bc_encoder(method, Path(cfg.encoder_from), quiet)
        if plan.state == "new" and cfg.anchor_from:
            load_bc_teacher(method, Path(cfg.anchor_from), quiet)
        # --- from here on the run directory is written ---
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(run_dir)
        save_config(cfg, run_dir / "config.yaml")
        if demos is None:  # the expert's env needs the process's renderer (one per process): lend it
            env.close()
            _collect_dry_run_demos(cfg)
            env = make_env(cfg.task, seed=cfg.seed, **env_options(cfg))
            demos = load_demos(cfg, action_dim)
        restored = ckpt.load_latest(warn) if plan.state == "resume" else None
        if plan.state == "resume" and restored is None and _has_episodes(run_dir):
            raise UsageError(f"{run_dir}: no readable checkpoint to resume its online episodes from")
        expert = SequenceReplay(cfg.seq_len, seed=cfg.seed, cover_edges=cfg.cover_edges)
        for ep in demos:
            expert.add_episode(ep)
        counters = restored[1]["counters"] if restored else {}
        logger = MetricLogger(run_dir, keep_rows=int(counters.get("metric_rows", 0)))
    except BaseException:
        env.close()
        raise
    return Parts(env=env, expert=expert, replay=SequenceReplay(cfg.seq_len, seed=cfg.seed + 1, cover_edges=cfg.cover_edges,
                                                             extra_keys=method.replay_keys), method=method,
                 logger=logger, ckpt=ckpt, np_rng=np_rng, expert_success=expert_success(Path(cfg.demos), demos, env),
                 restored=restored)


def _has_episodes(run_dir: Path) -> bool:
    return (run_dir / "episodes").is_dir() and any((run_dir / "episodes").glob("*.npz"))


def _latest_source_checkpoint(field: str, source_run: Path) -> tuple[Path, dict]:
    """The latest readable checkpoint of the run a SOURCE_RUN_FIELDS field names (never quarantined: not ours)."""
    found = Checkpointer(source_run).load_latest(warn, quarantine=False)
    if found is None:
        raise UsageError(f"{field}: {source_run} has no readable checkpoint to {SOURCE_RUN_FIELDS[field]}")
    return found


def _init_from(method: Method, source_run: Path, quiet: bool) -> None:
    found = _latest_source_checkpoint("init_from", source_run)
    try:
        restore(found[1], method.modules())
        method.reset_graphs()
    except (KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise UsageError(f"init_from: {found[0]} does not fit this method's networks ({first})") from None
    say(f"initialised networks from {found[0]}", quiet)


def _load_from_bc_run(field: str, bc_run: Path, target: torch.nn.Module | None, prefix: str, needs: str,
                      misfit: str, loaded: str, quiet: bool) -> None:
    """Load the `prefix` part of a BC run's policy (its latest checkpoint's) into `target`, with the field's errors:
    `needs` when the run is not BC or there is no target, `misfit` (plus torch's first line) when the shapes differ."""
    found = _latest_source_checkpoint(field, bc_run)
    policy = found[1]["modules"].get("policy", {})
    weights = {k.removeprefix(prefix): v for k, v in policy.items() if k.startswith(prefix)}
    if not weights or target is None:
        raise UsageError(f"{field}: needs a `bc` run ({bc_run}) and {needs}")
    try:
        target.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UsageError(f"{field}: {found[0]}'s {misfit}; {first})") from None
    say(f"{loaded} {found[0]}", quiet)


def load_bc_encoder(method: Method, bc_run: Path, quiet: bool) -> None:
    """Load a BC run's pixel encoder into the world model's image encoder (Config.encoder_from)."""
    wm = getattr(method, "wm", None)
    _load_from_bc_run("encoder_from", bc_run, None if wm is None else wm.encoder, "encoder.",
                      "a method with a world model (and one BC policy, not a bc.members ensemble)",
                      "encoder does not fit the world model's (it needs the run's bc.encoder 'conv' or 'both', and "
                      "wm.encoder_depth set to the run's bc.cnn_depth",
                      "world model's encoder initialised from", quiet)


def load_bc_teacher(method: Method, bc_run: Path, quiet: bool) -> None:
    """Load a BC run's pixel policy as the anchor's frozen teacher (Config.anchor_from)."""
    _load_from_bc_run("anchor_from", bc_run, getattr(method, "teacher", None), "",
                      "a CMIL run with agent.anchor_weight > 0", "policy does not fit (set bc.cnn_depth / bc.units / "
                      "bc.encoder / bc.keypoints / bc.members to the run's", "anchor's teacher policy loaded from", quiet)


# --- the commands' shared steps ---------------------------------------------------------------------

def launch(plan: RunPlan, quiet: bool = False) -> dict[str, Any]:
    """Train (or resume) the planned run; a finished run returns its saved result untouched."""
    if plan.state == "finished":
        assert plan.result is not None
        return plan.result
    from cmil.train import Trainer

    parts = build(plan, quiet)
    try:
        trainer = Trainer(plan.cfg, plan.run_dir, parts, quiet)
    except BaseException:  # from here on `Trainer.run` closes them
        parts.env.close()
        parts.logger.close()
        raise
    return trainer.run()


def result_line(result: dict[str, Any], run_dir: Path) -> str:
    """One line: success rate (for tasks with a success signal), return, budget, where."""
    if result.get("success_rate") is None:  # a task scored by its return only
        score = f"return {result['return']:.1f} over {result['episodes']} episodes (no success signal)"
    else:
        expert = result.get("expert_success_rate")
        score = (f"success rate {result['success_rate']:.2f} over {result['episodes']} episodes (expert "
                 f"{'n/a' if expert is None else f'{expert:.2f}'}), return {result['return']:.1f}")
    return f"{result['method']} on {result['task']}: {score}, {result['env_steps']} env steps; run: {run_dir}"


@dataclass
class EvalParts:
    cfg: Config
    env: gym.Env
    policy: Policy
    checkpoint: Path
    expert_success: float | None
    method: Method  # the restored method, for probes that read more than its acting policy


def open_policy(run_dir: Path) -> EvalParts:
    """The saved run's env and policy (latest readable checkpoint); reads the run, writes nothing."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise UsageError(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = load_config(saved)
    _check_task_and_device(cfg)
    found = Checkpointer(run_dir).load_latest(warn, quarantine=False)
    if found is None:
        raise UsageError(f"{run_dir} has no readable checkpoint to evaluate")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    from cmil.envs import make_env

    env = make_env(cfg.task, seed=cfg.seed, **env_options(cfg))
    try:
        method = make_method(cfg, action_dim_of(env, cfg.task), resolve_device(cfg.device))
        restore(found[1], method.modules())
    except BaseException:
        env.close()
        raise
    result = _read_result(run_dir) or {}
    success = result.get("expert_success_rate")
    if success is None and cfg.demos:
        success = (demo_stats(cfg.demos) or {}).get("success_rate")
    return EvalParts(cfg, env, method.policy(), found[0], success, method)


def eval_result_path(run_dir: Path, episodes: int, seed: int, deterministic: bool = True) -> Path:
    """Where `cmil eval RUN --episodes N --seed S [--stochastic]` writes its metrics."""
    return run_dir / "eval" / f"eval_{episodes}ep_seed{seed}{'' if deterministic else '_stochastic'}.json"


def evaluate_run(run_dir: Path, episodes: int = 20, seed: int = 20_000, deterministic: bool = True,
                 video_episodes: int = 2) -> dict[str, float]:
    """`cmil eval`: the saved run's policy (latest checkpoint) over `episodes` seeded episodes; the
    metrics (with each episode's seed, success, return and length under 'episodes') and videos go to RUN/eval/ (the
    only place it writes)."""
    from cmil.evaluate import evaluate
    from cmil.runs import write_json

    run_dir = Path(run_dir).resolve()
    parts = open_policy(run_dir)
    result = eval_result_path(run_dir, episodes, seed, deterministic)
    per_episode: list[dict] = []
    try:
        metrics = evaluate(parts.env, parts.policy, episodes, deterministic=deterministic, seed=seed,
                           video_dir=run_dir / "eval" / "videos", video_episodes=video_episodes, video_name=result.stem,
                           per_episode=per_episode)
    finally:
        parts.env.close()
    if parts.expert_success is not None and "eval/success_rate" in metrics:
        metrics["eval/expert_success_rate"] = parts.expert_success
    write_json(result, {**metrics, "checkpoint": parts.checkpoint.name, "episodes": per_episode})
    return metrics


def train(cfg: Config, run_dir: str | Path | None = None, quiet: bool = False) -> dict[str, Any]:
    """Plan and launch in one call (for scripts): train, resume or report the run in `run_dir`."""
    if run_dir is not None:
        cfg = replace(cfg, run_dir=str(run_dir))
    return launch(plan_run(cfg), quiet)
