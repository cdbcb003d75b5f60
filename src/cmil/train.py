"""The training loop shared by every method.

    pretrain on demos -> seed episodes -> (env step, every `train_every` steps `train_updates`
    updates, periodic evaluation and checkpoints) until `env_steps` -> final evaluation.

Checkpoints are written at episode ends, so a resumed run starts a fresh episode with exactly the
models, optimisers, replay (rebuilt from `episodes/`), RNG states and counters it saved.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from cmil.config import Config
from cmil.data.episodes import EpisodeRecorder, load_episode, save_episode
from cmil.errors import UsageError
from cmil.evaluate import evaluate, run_episode
from cmil.launch import Parts, say
from cmil.precision import use_precision
from cmil.runs import export_safetensors, restore, rng_state, set_rng_state, source_commit, write_json


class Trainer:
    """The loop over the parts `cmil.launch.build` made; resumes from `parts.restored` if given."""

    def __init__(self, cfg: Config, run_dir: Path, parts: Parts, quiet: bool = False):
        self.cfg, self.run_dir, self.quiet = cfg, run_dir, quiet
        self.env, self.expert, self.replay = parts.env, parts.expert, parts.replay
        self.method, self.logger, self.ckpt, self.np_rng = parts.method, parts.logger, parts.ckpt, parts.np_rng
        self.expert_success = parts.expert_success
        self.policy = self.method.policy()
        self.counters = {"env_step": 0, "episodes": 0, "pretrained": 0, "next_eval": cfg.eval_every,
                         "next_log": cfg.log_every, "next_ckpt": cfg.checkpoint_every}
        self.last_eval: dict[str, float] = {}
        if parts.restored is not None:
            self._resume(*parts.restored)

    # --- state ----------------------------------------------------------------------------
    def _resume(self, path: Path, payload: dict) -> None:
        restore(payload, self.method.modules(), self.method.optimizers())
        self.method.reset_graphs()  # a graph captured before would read the replaced optimiser states
        self.counters.update(payload["counters"])
        self.method.updates = self.counters.get("updates", 0)
        self.method.load_extra_state(payload.get("method_state", {}))
        set_rng_state(payload["rng"], self.np_rng)
        self.expert.set_rng_state(json.loads(payload["rng"]["expert_replay"]))
        self.replay.set_rng_state(json.loads(payload["rng"]["replay"]))
        files = self._episode_files()
        saved = self.counters["episodes"]
        if len(files) < saved:
            raise UsageError(f"{self.run_dir}/episodes: {len(files)} episodes, but the checkpoint {path.name} "
                             f"was taken after {saved}; restore the missing episode files")
        for extra in files[saved:]:  # played after the checkpoint: they are played again, identically
            extra.unlink()
        for episode in files[:saved]:
            self._store(load_episode(episode))
        say(f"resumed {self.run_dir} at env step {self.counters['env_step']} ({path.name})", self.quiet)

    def _store(self, ep: dict) -> None:
        """Into the online replay, with the method's per-frame labels (Method.label_episode)."""
        with use_precision(self.cfg.precision):
            self.replay.add_episode(self.method.label_episode(ep))

    def _episode_files(self) -> list[Path]:
        directory = self.run_dir / "episodes"
        return sorted(directory.glob("*.npz")) if directory.is_dir() else []

    def checkpoint(self) -> None:
        self.counters["updates"] = self.method.updates
        self.counters["metric_rows"] = self.logger.rows  # rows after this are dropped on resume
        rng = {**rng_state(self.np_rng), "expert_replay": json.dumps(self.expert.rng_state()),
               "replay": json.dumps(self.replay.rng_state())}
        self.ckpt.save(self.counters["env_step"], self.method.modules(), self.method.optimizers(),
                       self.counters, rng, extra={"method_state": self.method.extra_state()})

    # --- phases ---------------------------------------------------------------------------
    def pretrain(self) -> None:
        if self.counters["pretrained"]:
            return
        total = self.method.pretrain_steps()
        with tqdm(total=total, desc="pretrain", disable=self.quiet or total == 0, dynamic_ncols=True) as bar:
            with use_precision(self.cfg.precision):
                metrics = self.method.pretrain(self.expert, bar.update)
        if metrics:
            self.logger.log(0, metrics)
        if total and self.method.online:  # where the online phase starts from (logged at env step 0)
            pre = self.evaluate(self.cfg.eval_episodes, "pretrained")
            score = (f"success {pre['eval/success_rate']:.2f}" if "eval/success_rate" in pre
                     else f"return {pre['eval/return']:.1f}")
            say(f"pretrained policy: {score} over {self.cfg.eval_episodes} episodes", self.quiet)
        self.counters["pretrained"] = 1
        self.checkpoint()

    def evaluate(self, episodes: int, tag: str) -> dict[str, float]:
        metrics = evaluate(self.env, self.policy, episodes, self.cfg.eval_deterministic, seed=self.cfg.eval_seed,
                           video_dir=self.run_dir / "videos", video_episodes=self.cfg.video_episodes,
                           video_name=f"{tag}_{self.counters['env_step']:08d}")
        metrics.update(self.method.diagnostics(self.expert, self.replay))
        if self.expert_success is not None and "eval/success_rate" in metrics:
            metrics["eval/expert_success_rate"] = self.expert_success
            metrics["bound/oracle_success_gap"] = self.expert_success - metrics["eval/success_rate"]
        self.logger.log(self.counters["env_step"], metrics)
        self.last_eval = metrics
        return metrics

    def online(self) -> None:
        cfg, c = self.cfg, self.counters
        total = (cfg.seed_steps if self.method.uses_seed_episodes else 0) + cfg.env_steps
        bar = tqdm(total=total, initial=min(c["env_step"], total), desc=f"{cfg.method} {cfg.task}",
                   unit="step", disable=self.quiet, dynamic_ncols=True)
        train_metrics: dict[str, float] = {}
        while c["env_step"] < total:
            seeding = c["env_step"] < (cfg.seed_steps if self.method.uses_seed_episodes else 0)
            before = c["env_step"]
            episode_metrics = self._online_episode(seeding, train_metrics)
            bar.update(c["env_step"] - before)
            if c["env_step"] >= c["next_log"]:
                self.logger.log(c["env_step"], {**train_metrics, **episode_metrics})
                c["next_log"] += cfg.log_every
            if c["env_step"] >= c["next_eval"] and not seeding:
                self.evaluate(cfg.eval_episodes, "eval")
                c["next_eval"] = c["env_step"] + cfg.eval_every
            if c["env_step"] >= c["next_ckpt"]:
                self.checkpoint()
                c["next_ckpt"] = c["env_step"] + cfg.checkpoint_every
            bar.set_postfix(success=f"{self.last_eval.get('eval/success_rate', float('nan')):.2f}",
                            updates=self.method.updates)
        bar.close()

    def _online_episode(self, seeding: bool, train_metrics: dict[str, float]) -> dict:
        """One training episode; updates run every `train_every` env steps once seeding is over."""
        cfg, c = self.cfg, self.counters

        def act(obs):
            if seeding and cfg.seed_actions == "random":
                space = self.env.action_space
                action = self.np_rng.uniform(space.low, space.high).astype(space.dtype)
            else:
                action = self.policy.act(obs, deterministic=False)
            c["env_step"] += 1
            if not seeding and c["env_step"] % cfg.train_every == 0 and len(self.replay) > 0:
                with use_precision(cfg.precision):
                    for _ in range(cfg.train_updates):
                        train_metrics.update(self.method.update(self.expert, self.replay))
            return action

        recorder = EpisodeRecorder()
        rollout = run_episode(self.env, act, self.policy.reset, recorder=recorder,
                              seed=int(self.np_rng.integers(2**31)))
        ep = recorder.finish()
        self._store(ep)
        save_episode(self.run_dir / "episodes", ep, name=f"ep{c['episodes']:06d}-{rollout.length}.npz")
        c["episodes"] += 1
        return {"train/episode_success": float(rollout.success), "train/episode_return": rollout.ret,
                "train/episode_length": float(rollout.length), "train/updates": float(self.method.updates)}

    def finish(self) -> dict:
        """Final evaluation and exported weights; `run` writes the result as final.json last."""
        final = self.evaluate(self.cfg.final_eval_episodes, "final")
        export_safetensors(self.run_dir / "model.safetensors", self.method.modules())
        result = {"task": self.cfg.task, "method": self.cfg.method, "seed": self.cfg.seed,
                  "env_steps": self.counters["env_step"], "target_env_steps": self.cfg.env_steps,
                  "episodes": self.cfg.final_eval_episodes,
                  "success_rate": final.get("eval/success_rate"), "return": final["eval/return"],
                  "expert_success_rate": self.expert_success}
        return result

    def run(self) -> dict:
        start = time.time()
        try:
            self.pretrain()
            if self.method.online:
                self.online()
            result = self.finish()
            self.checkpoint()
        finally:
            self.logger.close()
            self.env.close()
        result["wall_time_s"] = round(time.time() - start, 1)
        result["commit"] = source_commit()  # the code that finished the run ('unknown' outside a git checkout)
        write_json(self.run_dir / "final.json", result)
        return result
