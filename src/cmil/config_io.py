"""Config files and checks: the dict / config.yaml round trip of a `Config`, and `validate`.

Kept apart from `cmil.config`, which defines the fields and presets; `load_config` reads a run's
config.yaml and validates it, so a damaged or hand-edited file is one ConfigError naming the field.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from cmil.config import STEERING_FIELDS, Config
from cmil.config_sections import AgentConfig, BCConfig, DACConfig, WorldModelConfig
from cmil.errors import ConfigError
from cmil.fileio import atomic_write_bytes


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


GROUPS: dict[str, type] = {"wm": WorldModelConfig, "agent": AgentConfig, "dac": DACConfig, "bc": BCConfig}


def from_dict(data: Any, where: str = "config") -> Config:
    """A Config from its `to_dict` form (config.yaml); unknown or missing groups and fields are errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of config fields, got {type(data).__name__}")
    data = dict(data)
    # Runs saved before BC had its own group kept its settings as bc_steps, bc_batch, bc_lr, bc_augment.
    old_bc = {k.removeprefix("bc_"): data.pop(k) for k in ("bc_steps", "bc_batch", "bc_lr", "bc_augment") if k in data}
    if old_bc and "bc" not in data:
        data["bc"] = old_bc
    # Runs saved before agent.anchor_target existed (round 24's tuning runs) named their teacher with anchor_from.
    if data.get("anchor_from") and isinstance(data.get("agent"), dict) and "anchor_target" not in data["agent"]:
        data["agent"] = {**data["agent"], "anchor_target": "bc"}
    groups = {}
    for name, cls in GROUPS.items():
        values = data.pop(name, {})
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: {name} must be a mapping of fields, got {values!r}")
        _reject_unknown(values, cls, where, f"{name}.")
        groups[name] = cls(**values)
    _reject_unknown(data, Config, where, "")
    return Config(**groups, **data)


def _reject_unknown(values: dict[str, Any], cls: type, where: str, prefix: str) -> None:
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"{where}: unknown config fields {[prefix + k for k in unknown]}")


def flatten(cfg: Config) -> dict[str, Any]:
    """{'task': ..., 'wm.deter': ..., ...}: one entry per leaf field."""
    return flatten_dict(to_dict(cfg))


def flatten_dict(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict (e.g. a saved config.yaml) -> {'a.b': leaf, ...}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten_dict(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def save_config(cfg: Config, path: Path) -> None:
    """Write config.yaml atomically: a run killed mid-write keeps a readable config (or none)."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False).encode()
    atomic_write_bytes(path, lambda f: f.write(text))


def load_config(path: Path) -> Config:
    """The config saved in a run directory, validated; a damaged file is a ConfigError naming it."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read ({type(exc).__name__})") from None
    cfg = from_dict(data, str(path))
    validate(cfg, str(path))
    return cfg


def resume_conflicts(saved: Config, requested: Config) -> list[str]:
    """Every learning-relevant field (all but STEERING_FIELDS) whose requested value differs from the run's."""
    saved_f, req_f = flatten(saved), flatten(requested)
    return [f"{k}: run has {saved_f[k]!r}, command asks {req_f[k]!r}" for k in req_f
            if k not in STEERING_FIELDS and req_f[k] != saved_f.get(k)]


# --- validation -----------------------------------------------------------------------------------

# Range rules by leaf name; fields not named here get the type and finiteness checks only.
AT_LEAST_ONE = {
    "num_demos", "train_every", "train_updates", "batch_size", "seq_len", "eval_every", "eval_episodes",
    "final_eval_episodes", "log_every", "checkpoint_every", "keep_checkpoints", "bc.steps", "bc.batch",
    "bc.cnn_depth", "bc.units", "bc.keypoints", "bc.members",
    "wm.deter", "wm.hidden", "wm.stoch", "wm.ensemble", "wm.cnn_depth",
    "agent.disc_layers", "agent.disc_units", "agent.actor_layers", "agent.actor_units", "agent.actor_heads",
    "agent.critic_layers",
    "agent.critic_units", "agent.horizon", "agent.target_update_every", "agent.self_imitation_every",
    "dac.feature_dim", "dac.cnn_depth", "dac.hidden", "dac.layers", "dac.batch_size"}
AT_LEAST_ZERO = {
    "seed", "threads", "env_steps", "seed_steps", "pretrain_updates", "pretrain_bc_updates", "video_episodes",
    "agent.imag_starts", "agent.alpha", "agent.beta", "agent.entropy", "agent.disc_noise_std", "agent.bc_feat_noise",
    "agent.disc_grad_penalty", "agent.self_imitation_last", "agent.explore_noise", "wm.kl_free", "wm.kl_scale",
    "wm.weight_decay", "wm.recon_focus_weight", "wm.overshoot_steps", "wm.overshoot_weight", "dac.grad_penalty",
    "dac.bc_weight", "wm.encoder_depth", "agent.penalty_norm_freeze"}
POSITIVE = {"wm.lr", "wm.eps", "wm.grad_clip", "wm.min_std", "agent.disc_lr", "agent.actor_lr", "agent.critic_lr",
            "agent.grad_clip", "agent.actor_min_std", "dac.lr", "dac.disc_lr", "dac.init_temperature",
            "dac.actor_min_std", "bc.lr"}
FRACTION = {"wm.kl_balance", "agent.gamma", "agent.lam", "agent.self_imitation", "dac.gamma", "dac.tau"}
# The conv encoder's four stride-2 kernel-4 layers need at least 46 pixels; the world model's
# decoder draws exactly 64x64 images, so the model-based methods need 64.
MIN_IMAGE_SIZE = 46
WORLD_MODEL_METHODS = ("cmil", "vmail")
DEVICES = ("cpu", "cuda", "auto")


def validate(cfg: Config, where: str = "") -> None:
    """Raise ConfigError naming the first bad field (type, range, or a combination that cannot run)."""
    prefix = f"{where}: " if where else ""

    def fail(name: str, problem: str) -> None:
        raise ConfigError(f"{prefix}{name} {problem}")

    flat = flatten(cfg)
    for name, hint in _leaf_hints().items():
        value = flat[name]
        problem = _type_problem(value, hint)
        if problem:
            fail(name, problem)
    for name in AT_LEAST_ONE:
        if flat[name] < 1:
            fail(name, f"must be >= 1, got {flat[name]!r}")
    for name in AT_LEAST_ZERO:
        if flat[name] < 0:
            fail(name, f"must be >= 0, got {flat[name]!r}")
    for name in POSITIVE:
        if not flat[name] > 0:
            fail(name, f"must be > 0, got {flat[name]!r}")
    for name in FRACTION:
        if not 0 <= flat[name] <= 1:
            fail(name, f"must be in [0, 1], got {flat[name]!r}")
    for name in ("demos", "run_dir", "init_from", "encoder_from", "anchor_from", "success_key"):
        if flat[name] is not None and not str(flat[name]).strip():
            fail(name, "must not be empty")
    for name in ("max_episode_steps", "action_repeat"):
        if flat[name] is not None and flat[name] < 1:
            fail(name, f"must be >= 1, got {flat[name]!r}")
    if cfg.env_kwargs is not None:
        try:
            kwargs = json.loads(cfg.env_kwargs)
        except ValueError as exc:
            fail("env_kwargs", f"is not valid JSON ({exc}): {cfg.env_kwargs!r}")
        if not isinstance(kwargs, dict):
            fail("env_kwargs", f"must be a JSON object like '{{\"key\": 1}}', got {cfg.env_kwargs!r}")
    if cfg.image_size < MIN_IMAGE_SIZE:
        fail("image_size", f"must be >= {MIN_IMAGE_SIZE} (the conv encoder's smallest input), got {cfg.image_size}")
    if cfg.method in WORLD_MODEL_METHODS and cfg.image_size != 64:
        fail("image_size", f"must be 64 for {cfg.method} (the world model's decoder draws 64x64 images), "
                           f"got {cfg.image_size}")
    if cfg.device not in DEVICES and not (cfg.device.startswith("cuda:") and cfg.device[5:].isdigit()):
        fail("device", f"must be one of {', '.join(DEVICES)} or cuda:N, got {cfg.device!r}")
    if cfg.agent.bc_frame_shift and (cfg.wm.posterior, cfg.wm.agent_feat) != ("image", "stoch"):
        fail("agent.bc_frame_shift", "needs wm.posterior 'image' and wm.agent_feat 'stoch' (a feature of one frame), "
                                     f"got {cfg.wm.posterior!r} / {cfg.wm.agent_feat!r}")
    if cfg.agent.self_imitation:
        if cfg.agent.bc_frame_shift or cfg.agent.bc_filter != "expert":
            fail("agent.self_imitation", "needs agent.bc_frame_shift False and agent.bc_filter 'expert' (the selected "
                                         "episodes' BC states are the world model's posterior states of the batch)")
        if not 0 <= cfg.agent.self_imitation_windows <= cfg.batch_size:
            fail("agent.self_imitation_windows", f"must be in [0, batch_size={cfg.batch_size}], "
                                                 f"got {cfg.agent.self_imitation_windows}")
    if not cfg.agent.critic_action_grad and cfg.agent.actor_objective != "lambda":
        fail("agent.critic_action_grad", f"False needs agent.actor_objective 'lambda' (with "
                                         f"'{cfg.agent.actor_objective}' the critics' action slope is the actor's "
                                         f"whole RL gradient)")
    if cfg.agent.actor_objective == "weighted" and (cfg.agent.weighted_candidates < 2 or cfg.agent.weighted_sigma <= 0):
        fail("agent.weighted_candidates", "actor_objective 'weighted' needs at least 2 candidates and weighted_sigma "
                                          f"> 0, got {cfg.agent.weighted_candidates} / {cfg.agent.weighted_sigma}")
    if cfg.wm.freeze_representation and (cfg.method != "cmil" or cfg.pretrain_updates + cfg.pretrain_bc_updates == 0):
        fail("wm.freeze_representation", "needs a pretrained representation (CMIL with pretrain_updates or "
                                         "pretrain_bc_updates > 0): it would freeze a random encoder")
    if cfg.wm.freeze_encoder and not cfg.encoder_from:
        fail("wm.freeze_encoder", "needs encoder_from (a trained `bc` run's encoder to keep): it would freeze a "
                                  "random encoder")
    if cfg.agent.anchor_filter != "none" and not cfg.agent.anchor_weight:
        fail("agent.anchor_filter", f"{cfg.agent.anchor_filter!r} needs agent.anchor_weight > 0 (it filters the anchor)")
    if cfg.anchor_from and (cfg.method != "cmil" or cfg.agent.anchor_target != "bc"):
        fail("anchor_from", "needs method cmil and agent.anchor_target 'bc' (it names the anchor's teacher), "
                            f"got method {cfg.method!r}, agent.anchor_target {cfg.agent.anchor_target!r}")
    if cfg.cuda_graph:
        if cfg.method not in ("cmil", "vmail"):
            fail("cuda_graph", f"replays CMIL's and VMAIL's update; {cfg.method} has no graphed update")
        if cfg.device == "cpu":
            fail("cuda_graph", "needs a CUDA device (--device cuda); CUDA graphs do not exist on the CPU")
        if cfg.agent.critic_target == "random":
            fail("cuda_graph", "does not combine with agent.critic_target 'random' (a host draw, which a replayed "
                               "graph would freeze at its captured value)")
    if cfg.agent.imag_starts and cfg.agent.real_critic_loss:
        fail("agent.imag_starts", "> 0 needs agent.real_critic_loss False (eq. 14 uses the imagined "
                                  "continuation from every real state)")


@functools.cache
def _leaf_hints() -> dict[str, Any]:
    """{'seed': int, 'wm.deter': int, ...}: the declared type of every leaf field."""
    hints: dict[str, Any] = {}
    for name, hint in typing.get_type_hints(Config).items():
        if name in GROUPS:
            hints.update({f"{name}.{k}": v for k, v in typing.get_type_hints(GROUPS[name]).items()})
        else:
            hints[name] = hint
    return hints


def _type_problem(value: Any, hint: Any) -> str | None:
    """Why `value` does not fit the annotation `hint` (None if it does)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return None if value in args else f"must be one of {', '.join(map(repr, args))}, got {value!r}"
    if type(None) in args:  # `X | None`
        return None if value is None else _type_problem(value, next(a for a in args if a is not type(None)))
    if hint is bool:
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else f"must be an integer, got {value!r}"
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {value!r}"
        return None if math.isfinite(value) else f"must be finite, got {value!r}"
    if hint is str:
        return None if isinstance(value, str) else f"must be a string, got {value!r}"
    return None
