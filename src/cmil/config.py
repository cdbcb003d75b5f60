"""Typed run configuration (the named presets are in `cmil.presets`).

Every field's docstring is its `--help` text (tyro reads them). Presets own per-task defaults;
command-line flags override single fields (`cmil train --preset kitchen --agent.alpha 5`).
The resolved config is saved as `config.yaml` in the run directory and reloaded on resume
(`cmil.config_io`, which also validates it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from cmil.config_sections import AgentConfig, BCConfig, DACConfig, WorldModelConfig

Method = Literal["cmil", "vmail", "bc", "dac"]


@dataclass(frozen=True)
class Config:
    """One training run: task, method, data, schedule, model and agent settings."""

    task: str = "mw-push"
    """Task name (see `cmil tasks`), or gym:ID for any gymnasium env that renders (gym:module:ID imports
    the module that registers ID first, e.g. gym:gymnasium_robotics:FetchReach-v4)."""
    env_kwargs: str | None = None
    """JSON object of keyword arguments for the task's env: gym.make's for gym:ID tasks, the env factory's
    for the others, e.g. '{"continuing_task": false}', or '{"placement_scale": 0.5}' for a Meta-World task's
    placements in a box half as wide. Saved in config.yaml, so resume and `cmil eval` rebuild the same env."""
    success_key: str | None = None
    """Info key of the success flag of a gym:ID task or a task registered from Python (default: `success`,
    else `is_success`; an env reporting neither is scored by its return only)."""
    max_episode_steps: int | None = None
    """Episode length cap of a gym:ID task (replaces its registered limit) or a task registered from Python;
    envs with no time limit of their own get 1000 steps."""
    action_repeat: int | None = None
    """Env steps per agent step (the action held through them, one frame at the end, rewards summed) for a
    gym:ID task, a task registered from Python or a Meta-World task (default 1; the episode limit of a gym
    task still counts its own steps). Longer steps let the world model see what an action does (docs/results.md, round 44)."""
    method: Method = "cmil"
    """Learning method: cmil | vmail | bc | dac."""
    seed: int = 0
    """Random seed (torch, numpy, env)."""
    demos: str | None = None
    """Directory of expert episodes; default: demos/{task} (collected by `cmil main` if missing)."""
    num_demos: int = 10
    """How many demo episodes to use (the first N by file name)."""
    run_dir: str | None = None
    """Run directory; default: runs/{task}__{method}__seed{seed}__{timestamp}. An existing one is resumed."""
    init_from: str | None = None
    """Initialise all networks from this run directory's latest checkpoint (a fresh run otherwise)."""
    encoder_from: str | None = None
    """A `bc` run directory whose pixel encoder (its latest checkpoint's) initialises the world model's image
    encoder of a new CMIL/VMAIL run, which then trains on as usual; the two encoders must have the same depth
    (wm.encoder_depth, or wm.cnn_depth when that is 0, equal to the run's bc.cnn_depth) and the run's bc.encoder
    must be 'conv' or 'both'. None = a random encoder (authors)."""
    anchor_from: str | None = None
    """A `bc` run directory whose pixel policy (its latest checkpoint's) is the anchor's teacher (agent.anchor_target
    'bc') instead of one trained inside the run; needs a `bc` run with this run's bc.cnn_depth, bc.units, bc.encoder
    and bc.keypoints."""
    device: str = "cpu"
    """Torch device: cpu | cuda | auto."""
    threads: int = 0
    """Torch CPU threads (0 = one per core)."""
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    """Training precision: fp32, or bf16 autocast of the MLPs and conv encoder/decoder (the RSSM stays
    fp32); auto = bf16 where the device runs it natively (CUDA, CPUs with AVX512-BF16 or AMX), else
    fp32. The run's config.yaml records the resolved choice. See cmil.precision."""
    tf32: bool = False
    """CUDA: run float32 matmuls (the RSSM's, which bf16 precision leaves in fp32) on TF32 tensor cores (10-bit
    mantissa, fp32 accumulation; `torch.backends.cuda.matmul.allow_tf32`). 1.22x on the `kitchen` update on an
    H200 (docs/performance.md); the authors' code ran its whole RSSM in float16. No effect on the CPU."""
    compile: bool = False
    """torch.compile CMIL's imagination rollout (the whole horizon becomes one graph; compiling takes
    minutes once, at the first update: ~4.5 min on a 2-core CPU)."""
    cuda_graph: bool = False
    """Replay CMIL's / VMAIL's whole update as a CUDA graph (device cuda only): on a GPU the eager update is
    bound by launching its thousands of small kernels from Python (docs/performance.md). The first 3 updates
    of each kind run eagerly, the 4th captures. Heads are then drawn on the GPU (another random stream than
    the eager path's, the same distribution). See cmil.cuda_graph."""
    image_size: int = 64
    """Side of the square image observations."""
    dry_run: bool = False
    """Run one tiny iteration of everything (seconds), for tests."""

    # --- schedule ---------------------------------------------------------------------------
    env_steps: int = 20_000
    """Online environment steps after the seed episodes (the x-axis budget)."""
    seed_steps: int = 1_000
    """Environment steps of seed episodes before online training, acted as `seed_actions` says (0 for VMAIL)."""
    seed_actions: Literal["policy", "random"] = "policy"
    """Who acts in the seed episodes: 'policy' = the BC-pretrained policy's samples (authors' code); 'random' =
    actions drawn uniformly from the action box, so that the world model first sees actions that vary apart
    from the state (a model trained on such data moves Meta-World's hand with the action best of those
    measured, docs/results.md round 41). The discriminator, the critics' real-data loss and the teacher's
    anchor see these episodes too."""
    train_every: int = 5
    """Run `train_updates` updates every this many environment steps (train ratio)."""
    train_updates: int = 1
    """Updates per training round."""
    batch_size: int = 16
    """Sequences per replay batch (and per expert batch)."""
    seq_len: int = 32
    """Length of each sampled sequence."""
    cover_edges: bool = False
    """Sample replay windows so that an episode's first and last frames are seen at least as often as the
    others (window start uniform over [-(L-1), T-1], clipped into the episode). False = DreamerV2's uniform
    start over the episode's full windows, under which frame 0 is in 1/L as many windows as a middle frame:
    the first moves of a demo, where the policy picks its way to the object, are then rarely trained on."""
    pretrain_updates: int = 300
    """Full agent updates on demos only before seed episodes (CMIL); 0 disables."""
    pretrain_bc_updates: int = 100
    """World model + BC updates after the full pretraining (CMIL)."""

    # --- evaluation and logging --------------------------------------------------------------
    eval_every: int = 2_500
    """Evaluate every this many environment steps."""
    eval_episodes: int = 10
    """Episodes per periodic evaluation."""
    final_eval_episodes: int = 20
    """Episodes of the final evaluation."""
    eval_seed: int = 10_000
    """Evaluation episodes use env seeds eval_seed, eval_seed + 1, ... (the same placements at every
    evaluation). Benchmarks report 10000+; tune with another range (diagnose_cmil uses 20000+)."""
    eval_deterministic: bool = True
    """Evaluate with the policy's mode (True) or sampled actions."""
    video_episodes: int = 2
    """Evaluation episodes saved as mp4 per evaluation."""
    log_every: int = 500
    """Write training metrics every this many environment steps."""
    checkpoint_every: int = 2_500
    """Checkpoint every this many environment steps."""
    keep_checkpoints: int = 2
    """How many checkpoints to keep."""

    wm: WorldModelConfig = field(default_factory=WorldModelConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    dac: DACConfig = field(default_factory=DACConfig)
    bc: BCConfig = field(default_factory=BCConfig)


# Fields that only steer a run (how long, how often it reports, where and in which precision it runs),
# not what it learns: they may change when a run is resumed. Every other field must match its config.yaml.
STEERING_FIELDS = {"env_steps", "eval_every", "eval_episodes", "final_eval_episodes", "video_episodes",
                   "log_every", "checkpoint_every", "keep_checkpoints", "device", "threads", "run_dir",
                   "precision", "tf32", "compile", "cuda_graph"}


def replace(cfg: Config, **changes: Any) -> Config:
    """`dataclasses.replace` that also takes dotted names of nested fields ('wm.deter')."""
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in changes.items():
        if "." in key:
            group, name = key.split(".", 1)
            nested.setdefault(group, {})[name] = value
        else:
            top[key] = value
    for group, values in nested.items():
        top[group] = dataclasses.replace(getattr(cfg, group), **values)
    return dataclasses.replace(cfg, **top)
