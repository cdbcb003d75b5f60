"""CMIL (Kolev et al. 2024, section 5) and VMAIL (the same without conservatism).

One `update` (`_train_step`, phase by phase) = world model step (eq. 1, with the terms that shape its
representation), the BC term, imagination from every posterior state and the actor step (eqs. 10-12 + beta * BC
- entropy, plus the teacher's anchor), discriminator step (eq. 8), critic step (eqs. 13-15); then the target copy
every N updates and the acting EMA. The losses themselves are in `cmil.methods.cmil_objectives`. VMAIL is this class
with alpha = beta = 0, no real-data critic loss and no BC pretraining (`presets.METHOD_OVERRIDES`). Notation: a
"feature" is concat(stoch, deter) of an RSSM state; the stored `action[:, t + 1]` is the action taken at frame t.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cmil.config import Config
from cmil.cuda_graph import GraphedStep
from cmil.data.replay import SequenceReplay, batch_to_torch
from cmil.errors import ConfigError
from cmil.methods.base import Method, register
from cmil.methods.bc import PixelPolicy, PolicyEnsemble
from cmil.methods.cmil_objectives import CMILObjectives
from cmil.methods.imitation_reward import ImitationReward
from cmil.methods.self_imitation import EpisodeSelection
from cmil.methods.teacher import LABEL_KEY, PixelTeacher
from cmil.models.actor_critic import Actor, TwinQ, frozen
from cmil.models.latent_policy import CarriedState, LatentPolicy
from cmil.models.networks import mlp
from cmil.models.normalize import ReturnScale
from cmil.models.optim import clipped_step, decoupled_adam, to_floats
from cmil.models.world_model import STATE_KEYS, WorldModel

ADAM_EPS = 1e-5  # actor, critics and discriminator (DreamerV2's, as in the authors' code)
_BATCH_KEYS = ("image", "action", "is_first")  # what an update reads of a sampled window
# Averaged between evaluations (`diagnostics`).
_DIAGNOSED = ("disc/expert_acc", "disc/policy_acc", "disc/expert_prob", "disc/policy_prob", "model/imag_disagreement",
              "train/q_mean", "train/actor_std", "train/bc_loss", "train/actor_grad_norm", "train/actor_grad_rl",
              "train/actor_grad_bc", "train/actor_grad_cos", "train/anchor_loss")


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(B, L, ...) -> (B * L, ...)."""
    return x.flatten(0, 1)


class _Real(NamedTuple):
    """What the world-model phase hands the agent's phases about the real windows (expert rows first, then replay)."""
    post: dict[str, torch.Tensor]      # posterior states (2B, L, ...), detached
    feat: torch.Tensor                 # their agent features (2B, L, F), detached
    disc_feat: torch.Tensor            # what D and the reward read on those frames (agent.disc_states)
    bc_feat: torch.Tensor              # the states the BC term acts on, with the world model's graph
    bc_act: torch.Tensor               # the expert's actions there
    bc_weight: torch.Tensor | None     # each BC window's weight (agent.self_imitation)
    anchor_target: torch.Tensor | None  # the anchor's target on the replay's frames 0..L-2 (online only)


class _Imagined(NamedTuple):
    """The imagination phase's rollout (eq. 11 notation, s^0 real) and what eq. 10 and the critics make of it."""
    feats: torch.Tensor         # (H+1, N, F)
    actions: torch.Tensor       # (H+1, N, A)
    disagreement: torch.Tensor  # (H, N), eq. 9
    entropy: torch.Tensor       # (H+1, N)
    reward: torch.Tensor        # (H, N), eq. 10
    q: torch.Tensor             # both critics (2, H+1, N)
    q_min: torch.Tensor         # V0 = min_i Q_i (H+1, N)
    returns: torch.Tensor       # V^lambda (H, N), eq. 11


@register("cmil", "vmail")
class CMIL(CMILObjectives, Method):
    # Running diagnostics and the self-imitation selection: a resumed run's metrics equal an uninterrupted one's.
    checkpointed_attrs = ("_diag", "_self_demos")

    def __init__(self, cfg: Config, action_dim: int, device: torch.device):
        super().__init__(cfg, action_dim, device)
        a = cfg.agent
        if a.imag_starts and a.real_critic_loss:
            raise ValueError("agent.imag_starts > 0 subsamples the imagination starts, but the real-data critic "
                             "loss (eq. 14) needs the imagined continuation from every real next state: "
                             "set agent.imag_starts 0 or agent.real_critic_loss False")
        self.wm = WorldModel(action_dim, cfg.wm, cfg.image_size).to(device)
        feat = self.wm.agent_feat_dim
        self.actor = Actor(feat, action_dim, a.actor_layers, a.actor_units, a.actor_min_std,
                           a.actor_heads).to(device)
        self.critic = TwinQ(feat, action_dim, a.critic_layers, a.critic_units).to(device)
        graphed = cfg.cuda_graph  # the update replays as a CUDA graph (cmil.cuda_graph)
        if graphed and device.type != "cuda":
            raise ConfigError(f"cuda_graph needs a CUDA device, and this run's device is {device}")
        # D, eq. 10's reward and penalty (and the agent.reward 'env' measurement's head).
        self.imitation = ImitationReward(a, feat, action_dim, cfg.seed, ADAM_EPS, graphed).to(device)
        # Running statistics of the optional rescalings (buffers, so they are checkpointed; D's and the penalty's
        # are the reward's own, listed here under the checkpoint names they always had).
        self.stats = nn.ModuleDict({"disc_input": self.imitation.input_stats,
                                    "disagreement": self.imitation.disagreement_stats,
                                    "returns": ReturnScale()}).to(device)
        # Auxiliary per-frame BC head on the image embedding (agent.bc_embed_weight); it trains with the
        # world model, in the world model's optimiser.
        self.embed_bc = mlp(self.wm.embed_dim, action_dim, 2, a.actor_units).to(device) if a.bc_embed_weight else None
        self.batch_keys = _BATCH_KEYS + (("reward",) if self.imitation.head is not None else ())
        # The anchor's target (agent.anchor_weight, anchor_target): a pixel BC teacher's action on the replay's
        # frames (cmil.methods.teacher), or the acting actor frozen when pretraining ends.
        self._teacher = (PixelTeacher(cfg, action_dim, device, trained=bool(cfg.anchor_from))
                         if a.anchor_weight and a.anchor_target == "bc" else None)
        # The teacher's action on each online frame is computed once, as the episode enters the replay.
        self.replay_keys = (LABEL_KEY,) if self._teacher is not None else ()
        self.anchor = (copy.deepcopy(self.actor).requires_grad_(False)
                       if a.anchor_weight and a.anchor_target == "pretrained" else None)
        if a.teacher_embed_weight and self._teacher is None:
            raise ConfigError("agent.teacher_embed_weight distils the pixel BC teacher's embedding, and this run has "
                              "no teacher: set agent.anchor_weight > 0 and agent.anchor_target bc")
        if a.teacher_embed_weight and cfg.bc.members > 1:
            raise ConfigError("agent.teacher_embed_weight distils one pixel BC policy's embedding, and bc.members "
                              f"{cfg.bc.members} makes the teacher an ensemble: set bc.members 1")
        # agent.teacher_embed_weight: the agent's features predict the teacher's embedding of their frame.
        self.teacher_embed_head = nn.Linear(feat, cfg.bc.units).to(device) if a.teacher_embed_weight else None
        self.wm.graph_safe = graphed
        self.wm_opt = self.wm.make_optimizer(capturable=graphed)
        for head in (self.embed_bc, self.teacher_embed_head):  # trained with the world model
            if head is not None:
                self.wm_opt.add_param_group({"params": list(head.parameters())})
        self.actor_opt = decoupled_adam(self.actor.parameters(), a.actor_lr, ADAM_EPS, a.weight_decay, graphed)
        self.critic_opt = decoupled_adam(self.critic.q.parameters(), a.critic_lr, ADAM_EPS, a.weight_decay, graphed)
        if cfg.compile:  # one graph for the whole horizon (WorldModel.imagine_step keeps the head a tensor)
            self.imagine = torch.compile(self.imagine)
        self._graphs: dict[tuple[bool, bool], GraphedStep] = {}  # one per kind of step (agent or not, trained set)
        # The acting weights (agent.policy_ema): an EMA of the world model and the actor, or the live modules.
        self._acting = nn.ModuleDict({"wm": self.wm, "actor": self.actor})
        self.policy_ema = (AveragedModel(self._acting, multi_avg_fn=get_ema_multi_avg_fn(a.policy_ema), use_buffers=True)
                           if a.policy_ema else None)
        self._diag: dict[str, list[float]] = defaultdict(list)
        # agent.self_imitation: the online episodes D ranks most expert-like join the BC term.
        self.selection = EpisodeSelection(a, self._episode_score) if a.self_imitation else None
        self._self_demos = self.selection.state if self.selection else {}   # checkpointed
        self._pretraining = False   # wm.freeze_representation stops the representation's training after it
        self.carry = CarriedState(2 * cfg.batch_size, cfg.wm.deter, cfg.wm.stoch).to(device)

    # --- plumbing -------------------------------------------------------------------------
    @property
    def cfg(self) -> Config:
        return self._cfg

    @cfg.setter
    def cfg(self, cfg: Config) -> None:
        """A live method given a new config (a probe's or a test's change) passes the agent's part on to the parts
        that read it."""
        self._cfg = cfg
        for part in (getattr(self, "imitation", None), getattr(self, "selection", None)):
            if part is not None:
                part.cfg = cfg.agent

    @property
    def teacher(self) -> PixelPolicy | PolicyEnsemble | None:
        """The anchor's pixel BC teacher network (agent.anchor_target 'bc'), or None."""
        return self._teacher.net if self._teacher is not None else None

    def modules(self) -> dict[str, nn.Module]:
        mods = {"world_model": self.wm, "actor": self.actor, "critic": self.critic,
                "discriminator": self.imitation.disc, "stats": self.stats, "carried_state": self.carry}
        if self.embed_bc is not None:
            mods["embed_bc"] = self.embed_bc
        if self.teacher_embed_head is not None:
            mods["teacher_embed_head"] = self.teacher_embed_head
        if self.policy_ema is not None:
            mods["policy_ema"] = self.policy_ema
        if self.anchor is not None:
            mods["anchor_actor"] = self.anchor
        if self.teacher is not None:
            mods["anchor_teacher"] = self.teacher
        if self.imitation.head is not None:
            mods["reward_head"] = self.imitation.head
        return mods

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"world_model": self.wm_opt, "actor": self.actor_opt, "critic": self.critic_opt,
                "discriminator": self.imitation.disc_opt}
        if self.imitation.head_opt is not None:
            opts["reward_head"] = self.imitation.head_opt
        return opts

    def policy(self, live: bool = False) -> LatentPolicy:
        """The acting policy: the EMA weights when agent.policy_ema is on (unless `live`), else the live ones."""
        acting = self._acting if live or self.policy_ema is None else self.policy_ema.module
        return LatentPolicy(acting["wm"], acting["actor"], self.action_dim, self.device, self.cfg.agent.explore_noise)

    def pretrain_steps(self) -> int:
        teacher = self._teacher.steps if self._teacher is not None else 0
        return teacher + self.cfg.pretrain_updates + self.cfg.pretrain_bc_updates

    def pretrain(self, expert: SequenceReplay, progress) -> dict[str, float]:
        """BC-style warm start on demos only: full agent updates, then world model + BC (paper sec. 5); first,
        with agent.anchor_target 'bc', the pixel BC teacher of the anchor (the `bc` method's training)."""
        metrics: dict[str, float] = {}
        teacher = self._teacher.pretrain(expert, progress) if self._teacher is not None else {}
        self._pretraining = True
        for _ in range(self.cfg.pretrain_updates):
            metrics = self.update(expert, expert)
            progress(1)
        for _ in range(self.cfg.pretrain_bc_updates):
            metrics = self.update(expert, expert, agent=False)
            progress(1)
        self._pretraining = False
        if self.anchor is not None:  # what the online actor is pulled back to: the policy that acts now
            self.anchor.load_state_dict(self.policy().actor.state_dict())
        self.reset_graphs()  # the pretraining steps' graphs never replay again: free their memory
        return {f"pretrain/{k.split('/', 1)[-1]}": v for k, v in {**metrics, **teacher}.items()}

    # --- the update -----------------------------------------------------------------------
    def update(self, expert: SequenceReplay, replay: SequenceReplay, agent: bool = True) -> dict[str, float]:
        """One update of the world model and the BC term, and with `agent` of the actor, critics and
        discriminator in imagination; then the target critics (every N updates) and the acting EMA
        (agent.policy_ema) follow. With `cuda_graph` the step itself replays as a CUDA graph."""
        B = self.cfg.batch_size
        exp = batch_to_torch({k: v for k, v in expert.sample(B).items() if k in self.batch_keys}, self.device)
        rep = batch_to_torch(self._replay_batch(replay, B, agent and not self._pretraining), self.device)
        if self.cfg.cuda_graph:
            key = (agent, self._pretraining)  # what the step trains differs between these (see _wm_trained_parameters)
            if key not in self._graphs:
                self._graphs[key] = GraphedStep(self._train_step)
            m = to_floats(self._graphs[key](exp, rep, agent))
        else:
            m = to_floats(self._train_step(exp, rep, agent))
        if agent:
            self.updates += 1
            if self.updates % self.cfg.agent.target_update_every == 0:
                self.critic.update_target()
            for key in _DIAGNOSED:
                if key in m:  # (a diagnosis may replace a part of the step)
                    self._diag[key].append(m[key])
        if self.policy_ema is not None:
            self.policy_ema.update_parameters(self._acting)
        if self.selection is not None:
            m.update(self.selection.metrics())
        return m

    def _replay_batch(self, replay: SequenceReplay, n: int, online: bool) -> dict[str, np.ndarray]:
        """The update's replay windows, what the step reads of them (with agent.self_imitation, `EpisodeSelection`'s,
        flagged for the BC term when `online`)."""
        if self.selection is None:
            return {k: v for k, v in replay.sample(n).items() if k in self.batch_keys + self.replay_keys}
        return self.selection.replay_batch(replay, n, online, self.batch_keys + self.replay_keys)

    @torch.no_grad()
    def episode_features(self, ep: dict, zero_actions: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """A stored episode filtered by the world model: posterior features (T, F) of frames 0..T-1, the actions
        taken there (T, A), and the states. `zero_actions` filters with the actions replaced by zeros (the images
        alone tell the state)."""
        image, action, is_first = (torch.as_tensor(ep[k], device=self.device)[None] for k in ("image", "action", "is_first"))
        seen = torch.zeros_like(action) if zero_actions else action
        post, _ = self.wm.observe(self.wm.encode(image), seen, is_first, sample=False)
        post = {k: v[0, :-1] for k, v in post.items()}
        return self.wm.agent_feat(post), action[0, 1:], post

    @torch.no_grad()
    def _episode_score(self, ep: dict) -> float:
        """Self-imitation's score of a stored episode: D's mean logit on its last self_imitation_last (posterior
        state, action taken there) pairs (0 = all of them)."""
        feat, action, _ = self.episode_features(ep)
        return float(self.imitation.logit(feat, action)[-self.cfg.agent.self_imitation_last:].mean())

    def reset_graphs(self) -> None:
        """Drop the captured CUDA graphs (and their memory); the next update of each kind captures anew. Needed
        after anything replaces tensors a graph reads, e.g. loading optimiser states into a running method."""
        self._graphs.clear()

    # --- one update, phase by phase -------------------------------------------------------
    def _train_step(self, exp: dict[str, torch.Tensor], rep: dict[str, torch.Tensor], agent: bool
                    ) -> dict[str, torch.Tensor]:
        """The update's losses and optimiser steps on an expert and a replay batch {'image', 'action',
        'is_first'}, in order: world model (eq. 1), BC term, imagination and actor (eqs. 10-12), discriminator
        (eq. 8), critics (eqs. 13-15); returns tensor metrics. It reads nothing back to the host, so that it can be
        replayed as a CUDA graph: what depends on a count or on Python state (target copies, the EMA) is in `update`."""
        a, B = self.cfg.agent, self.cfg.batch_size
        batch = {k: torch.cat([exp[k], rep[k]]) for k in self.batch_keys}
        act_taken = batch["action"][:, 1:]                          # action taken at frames 0..L-2
        if a.bc_action_noise:  # the filter sees noisy expert actions; every loss keeps the clean ones
            noisy = exp["action"] + a.bc_action_noise * torch.randn_like(exp["action"])
            batch["action"] = torch.cat([noisy.clamp(-1, 1), rep["action"]])
        real, m = self._model_step(exp, rep, batch, act_taken)

        # Behaviour cloning term on expert states (agent.bc_loss: NLL or MSE of the mean).
        actor_bc_feat = real.bc_feat.detach()
        if a.bc_feat_noise:  # nearby states, the same expert action (agent.bc_feat_noise)
            scale = actor_bc_feat.flatten(0, -2).std(0)
            actor_bc_feat = actor_bc_feat + a.bc_feat_noise * scale * torch.randn_like(actor_bc_feat)
        bc_loss = self.bc_loss(actor_bc_feat, real.bc_act, weight=real.bc_weight)
        if not agent:
            clipped_step(self.actor_opt, bc_loss, self.actor.parameters(), a.grad_clip)
            m["train/bc_loss"] = bc_loss.detach()
            return m

        starts = slice(B, None) if a.imag_from == "replay" else slice(None)   # the windows imagined from
        imag, rl_loss, rl_metrics = self._rl_objective(real.post, starts)     # eqs. 10-12
        m.update(rl_metrics)
        reg_loss = a.beta * bc_loss
        if real.anchor_target is not None:  # agent.anchor_weight, on the policy's own states
            anchor_loss, anchor_metrics = self._anchor_loss(real.feat[B:, :-1], real.anchor_target)
            reg_loss = reg_loss + a.anchor_weight * anchor_loss
            m.update(anchor_metrics)
        m.update(self._actor_step(rl_loss, reg_loss))
        feats, actions = imag.feats.detach(), imag.actions.detach()
        m.update(self._disc_step(real.disc_feat, act_taken, feats, actions))  # eq. 8

        # Critics (eqs. 13-15) against target-network TD(lambda) targets.
        critic_loss, cm = self.critic_loss(real.feat[starts], act_taken[starts], batch["is_first"][starts], feats,
                                           actions, imag.reward.detach(), real.disc_feat[starts],
                                           q_imag=imag.q[:, :-1])
        clipped_step(self.critic_opt, critic_loss, self.critic.q.parameters(), a.grad_clip)

        with torch.no_grad():  # the actor's std on expert states
            actor_std = self.actor(real.feat[:B, :-1]).std.mean()
        m.update(cm)
        if a.self_imitation:
            m["train/self_demo_windows"] = rep["self_demo"].sum()
        m.update({
            "train/actor_loss": rl_loss + a.beta * bc_loss, "train/bc_loss": bc_loss,
            "train/critic_loss": critic_loss,
            "train/imag_reward": imag.reward.mean(), "train/imag_return": imag.returns.mean(),
            "train/entropy": imag.entropy.mean(), "train/q_mean": imag.q_min.mean(), "train/actor_std": actor_std,
            "model/imag_disagreement": imag.disagreement.mean(),
        })
        return m

    def _model_step(self, exp: dict[str, torch.Tensor], rep: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                    act_taken: torch.Tensor) -> tuple[_Real, dict[str, torch.Tensor]]:
        """World model step (eq. 1) on expert and replay windows together, with the optional terms that shape its
        representation: the BC loss (agent.bc_model_weight), the embedding's BC head, the teacher's embedding, and
        the anchor's error at the policy's own states (the actor is frozen for these: its own step comes later)."""
        cfg, a, B = self.cfg, self.cfg.agent, self.cfg.batch_size
        carried = self.carry.get() if cfg.wm.carry_state else None
        wm_loss, post, m = self.wm.loss(batch, carried)
        embed, prior_feat = post.pop("embed"), post.pop("prior_feat")
        live_feat = self.wm.agent_feat(post)  # (2B, L, F), with the world model's graph: what its own terms shape
        bc_feat, bc_act, bc_weight = self._bc_states(exp, rep, batch, act_taken, embed, live_feat, carried)
        if a.bc_model_weight:
            with frozen(self.actor):
                bc_model = self.bc_loss(bc_feat, bc_act, shaping=True, weight=bc_weight)
            wm_loss = wm_loss + a.bc_model_weight * bc_model
            m["model/bc_loss"] = bc_model.detach()
        if self.embed_bc is not None:
            embed_bc = (torch.tanh(self.embed_bc(embed[:B, :-1])) - act_taken[:B]).pow(2).sum(-1).mean()
            wm_loss = wm_loss + a.bc_embed_weight * embed_bc
            m["model/embed_bc_loss"] = embed_bc.detach()
        if self.teacher_embed_head is not None:  # agent.teacher_embed_weight, on every frame of the batch
            distil = self._teacher_embed_loss(batch["image"], live_feat)
            wm_loss = wm_loss + a.teacher_embed_weight * distil
            m["model/teacher_embed_loss"] = distil.detach()
        anchor_target = None
        if a.anchor_weight and not self._pretraining:  # agent.anchor_weight's target on the replay's frames 0..L-2
            rep_feat = live_feat[B:, :-1]
            anchor_target = self._anchor_target(rep, rep_feat.detach())
            if a.anchor_model_weight:  # the anchor's error shapes the representation there too
                with frozen(self.actor):
                    anchor_model = (self.actor(rep_feat).mean - anchor_target).pow(2).sum(-1)
                wm_loss = wm_loss + a.anchor_model_weight * anchor_model.mean()
                m["model/anchor_loss"] = anchor_model.mean().detach()
        m["model/grad_norm"] = clipped_step(self.wm_opt, wm_loss, self._wm_trained_parameters(), cfg.wm.grad_clip)
        post = {k: v.detach() for k, v in post.items()}
        self.carry.set({k: post[k][:, -1] for k in STATE_KEYS})
        feat = self.wm.agent_feat(post)                             # (2B, L, F)
        disc_feat = self._disc_states(feat, prior_feat, batch["is_first"])   # what D reads on real frames
        if self.imitation.head is not None:  # agent.reward 'env': r(s_t, a_t) -> the reward that followed
            m["train/reward_head_loss"] = self.imitation.fit_task_reward(
                feat[:, :-1], act_taken, batch["reward"][:, 1:], (~batch["is_first"][:, 1:]).float()).detach()
        return _Real(post, feat, disc_feat, bc_feat, bc_act, bc_weight, anchor_target), m

    def _bc_states(self, exp: dict[str, torch.Tensor], rep: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                   act_taken: torch.Tensor, embed: torch.Tensor, live_feat: torch.Tensor, carried: dict | None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The states the BC term acts on (with the world model's graph), their expert actions and each window's
        weight: the expert windows' posterior states, or with agent.self_imitation every window, the replay's
        weighted by their 'self_demo' flag (1 = a selected episode's window, a demonstration too).
        agent.bc_frame_shift and agent.bc_filter 'policy' read the expert's frames another way."""
        a, B = self.cfg.agent, self.cfg.batch_size
        rows = slice(None) if a.self_imitation else slice(None, B)
        feat, action = live_feat[rows, :-1], act_taken[rows]
        weight = torch.cat([torch.ones_like(rep["self_demo"]), rep["self_demo"]]) if a.self_imitation else None
        if a.bc_frame_shift:  # the same frames, each with its own shift, read one by one
            feat = self.wm.frame_feat(exp["image"][:, :-1], shift=True)
        if a.bc_filter == "policy":  # the states the actor itself would be in on the expert's images
            bc_post = self.wm.observe_acting(
                embed[:B], batch["is_first"][:B], lambda f: self.actor(f).mean, batch["action"][:B, 0],
                None if carried is None else {k: v[:B] for k, v in carried.items()})
            feat = self.wm.agent_feat(bc_post)[:, :-1]
        return feat, action, weight

    def _rl_objective(self, post: dict[str, torch.Tensor], starts: slice
                      ) -> tuple[_Imagined, torch.Tensor, dict[str, torch.Tensor]]:
        """Imagination from the real posterior states of the `starts` windows (eq. 11 notation: s^0 real,
        s^1..s^H imagined), eq. 10's reward on it, and the actor's RL loss: eq. 12 (agent.actor_objective
        'lambda'), the critics' action slope ('q', 'q_real'), or regression onto value-weighted candidates (its
        step size is the one metric it returns)."""
        a = self.cfg.agent
        m: dict[str, torch.Tensor] = {}
        start = {k: _flat(v[starts]) for k, v in post.items()}
        if a.imag_starts and a.imag_starts < len(start["deter"]):
            idx = torch.randperm(len(start["deter"]), device=self.device)[: a.imag_starts]
            start = {k: v[idx] for k, v in start.items()}
        with frozen(self.wm, self.imitation):
            feats, actions, disagreement, entropy = self.imagine(start, a.horizon)
            reward = self.imitation.reward(feats[:-1], actions[:-1], disagreement)  # (H, N), eq. 10
            # One critic forward serves the actor (through the actions) and the critic loss (through the
            # critics' parameters); each backward is restricted to its own module's parameters.
            q_feats = feats if a.actor_objective == "lambda" else feats.detach()
            q_acts = actions if a.critic_action_grad else actions.detach()           # Q as a state value
            q_imag = self.critic(q_feats, q_acts)                                    # (2, H+1, N)
            q_min = q_imag.min(0).values                                             # V0(s^t) = min_i Q_i
            returns, eq12 = self.lambda_objective(reward, q_min)
            if a.actor_objective == "weighted":  # regression onto value-weighted candidates at the real states
                mean = self.actor(feats[0].detach()).mean
                target = self.weighted_target(feats[0].detach(), mean.detach())
                rl_loss = a.rl_weight * (mean - target).pow(2).sum(-1).mean()
                m["train/weighted_step"] = (target - mean.detach()).abs().mean()
            else:
                # 'q': the critics' action slope only (no path through the dynamics); 'q_real': at the real states
                steps = slice(0, 1) if a.actor_objective == "q_real" else slice(None, -1)
                actor_obj = eq12 if a.actor_objective == "lambda" else q_min[steps]
                if a.return_norm:
                    self.stats["returns"].update(returns)
                    actor_obj = actor_obj / self.stats["returns"].scale
                rl_loss = a.rl_weight * (-actor_obj.mean() - a.entropy * entropy[steps].mean())
        return _Imagined(feats, actions, disagreement, entropy, reward, q_imag, q_min, returns), rl_loss, m

    def _anchor_loss(self, feat: torch.Tensor, target: torch.Tensor
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The anchor term and its metrics: the actor's mean action at the policy's own states `feat` (detached)
        against the anchor's target, kept only where the critics agree with agent.anchor_filter 'q'."""
        m: dict[str, torch.Tensor] = {}
        mean = self.actor(feat).mean
        err = (mean - target).pow(2).sum(-1)
        if self.cfg.agent.anchor_filter == "q":  # only where the critics rate the target at least as high as the actor
            kept = self._anchor_kept(feat, target, mean.detach())
            err = err * kept
            m["train/anchor_kept"] = kept.mean()
        loss = err.mean()
        m["train/anchor_loss"] = loss.detach()
        return loss, m

    def _disc_step(self, disc_feat: torch.Tensor, act_taken: torch.Tensor, feats: torch.Tensor,
                   actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """D's step (eq. 8): expert posterior pairs against the policy's, imagined (feats, actions: (H+1, N, ...),
        detached) or with agent.disc_policy_pairs 'replay' its real frames read as the expert's are."""
        a, B = self.cfg.agent, self.cfg.batch_size
        # With disc_states 'prior' both sides are the prior's: no imagination step 0 (a real posterior state)
        # and no window-first expert frame (no prediction for it).
        s0 = 1 if a.disc_states == "prior" else 0
        if a.disc_policy_pairs == "replay":
            pol_feat, pol_act = disc_feat[B:, s0:-1], act_taken[B:, s0:]
        else:
            pol_feat, pol_act = feats[s0:-1], actions[s0:-1]
        return self.imitation.train_disc((_flat(disc_feat[:B, s0:-1]), _flat(act_taken[:B, s0:])),
                                         (_flat(pol_feat), _flat(pol_act)))

    def _wm_trained_parameters(self) -> list[nn.Parameter]:
        """What the world-model step trains: all of its optimiser's parameters, less the encoder's with
        wm.freeze_encoder and the representation's once pretraining is over with wm.freeze_representation
        (they then get no gradient, so no step and no decay, and the backward skips them)."""
        params = [p for g in self.wm_opt.param_groups for p in g["params"]]
        frozen_params = list(self.wm.encoder.parameters()) if self.cfg.wm.freeze_encoder else []
        if self.cfg.wm.freeze_representation and not self._pretraining:
            frozen_params += self.wm.representation_parameters()
        frozen_ids = {id(p) for p in frozen_params}
        return [p for p in params if id(p) not in frozen_ids]


    def label_episode(self, ep: dict) -> dict:
        """With a teacher, the episode with its action on every frame (cmil.methods.teacher.LABEL_KEY)."""
        return self._teacher.label_episode(ep) if self._teacher is not None else ep


    def _actor_step(self, rl_loss: torch.Tensor, reg_loss: torch.Tensor) -> dict[str, torch.Tensor]:
        """Step on rl_loss + reg_loss (beta * BC, plus the anchor term when agent.anchor_weight); logs the norms
        (before clipping) of the RL part and of the regularising part of the gradient (`actor_grad_bc`), and
        their cosine. The regulariser's gradient is a cheap second backward through the actor alone; the RL
        part is the total minus it (gradients are linear)."""
        a = self.cfg.agent
        params = list(self.actor.parameters())
        g_bc = torch.autograd.grad(reg_loss, params, retain_graph=True, allow_unused=True)
        self.actor_opt.zero_grad(set_to_none=True)
        (rl_loss + reg_loss).backward(inputs=params, retain_graph=True)  # the critic loss reuses the graph
        total = torch.cat([p.grad.flatten() for p in params])
        bc = torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, g_bc, strict=True)])
        rl = total - bc
        cos = F.cosine_similarity(rl, bc, dim=0, eps=1e-12)
        norm = nn.utils.clip_grad_norm_(params, a.grad_clip)
        self.actor_opt.step()
        return {"train/actor_grad_norm": norm, "train/actor_grad_rl": rl.norm(), "train/actor_grad_bc": bc.norm(),
                "train/actor_grad_cos": cos}

    def diagnostics(self, expert: SequenceReplay, replay: SequenceReplay) -> dict[str, float]:
        """Averages since the last evaluation, incl. the paper's Fig. 3 quantities."""
        out = {k: float(np.mean(v)) for k, v in self._diag.items() if v}
        self._diag.clear()
        if "disc/expert_prob" in out:
            out["bound/distribution_match"] = out["disc/expert_prob"] - out["disc/policy_prob"]
            out["bound/model_mismatch"] = out["model/imag_disagreement"]
        return out

