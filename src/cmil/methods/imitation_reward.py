"""CMIL's reward (eq. 10) and what it is made of: the discriminator D on latent (state, action) pairs (eq. 8), its
log-ratio, the ensemble-disagreement penalty (eq. 9), the running statistics of their optional rescalings, and the
`agent.reward env` measurement's head that learns the task's own reward in D's place.

The critics and the actor read the reward through `reward`; the CMIL update trains D with `train_disc` on the pairs it
chose (expert posterior pairs vs the policy's). `cfg` is the agent's config: the method points it at a new one when its
own config changes (`CMIL.cfg`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmil.config_sections import AgentConfig
from cmil.models.actor_critic import Discriminator, gradient_penalty
from cmil.models.networks import mlp
from cmil.models.normalize import RunningMeanStd
from cmil.models.optim import clipped_step, decoupled_adam

Pairs = tuple[torch.Tensor, torch.Tensor]   # (features (N, F), actions (N, A))


class ImitationReward(nn.Module):
    def __init__(self, cfg: AgentConfig, feat_dim: int, action_dim: int, seed: int, adam_eps: float, graphed: bool):
        super().__init__()
        self.cfg = cfg
        self.action_dim = action_dim if cfg.disc_action else 0   # agent.disc_action: D reads (s, a) or s alone
        self.disc = Discriminator(feat_dim, self.action_dim, cfg.disc_layers, cfg.disc_units, cfg.disc_noise_std)
        # Running statistics of D's input (agent.disc_input_norm) and of the disagreement (agent.penalty_norm).
        self.input_stats = RunningMeanStd(feat_dim + self.action_dim)
        self.disagreement_stats = RunningMeanStd(freeze_after=cfg.penalty_norm_freeze)
        # agent.reward 'env' (a measurement): a head that learns the task's reward on real (s, a) pairs. Drawn from its
        # own generator, so that the measurement's pretraining is its seed's `logratio` run's.
        self.head = None
        if cfg.reward == "env":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.head = mlp(feat_dim + action_dim, 1, cfg.disc_layers, cfg.disc_units)
        self.disc_opt = decoupled_adam(self.disc.parameters(), cfg.disc_lr, adam_eps, cfg.weight_decay, graphed)
        self.head_opt = (decoupled_adam(self.head.parameters(), cfg.disc_lr, adam_eps, cfg.weight_decay, graphed)
                         if self.head is not None else None)

    def logit(self, feat: torch.Tensor, action: torch.Tensor, noise: bool = False) -> torch.Tensor:
        """D's logit on (feature, action), standardised first with agent.disc_input_norm; a state-only D
        (agent.disc_action false) ignores the action."""
        return self.disc(*self.disc_input(feat, action), noise=noise)

    def disc_input(self, feat: torch.Tensor, action: torch.Tensor) -> Pairs:
        """(feature, action) as D's layers read them: the action cut to what D reads, both standardised
        with agent.disc_input_norm."""
        action = action[..., : self.action_dim]
        if not self.cfg.disc_input_norm:
            return feat, action
        x = self.input_stats.normalize(torch.cat([feat, action], -1))
        return x[..., : feat.shape[-1]], x[..., feat.shape[-1]:]

    def reward(self, feat: torch.Tensor, action: torch.Tensor, disagreement: torch.Tensor | None,
               update_stats: bool = True) -> torch.Tensor:
        """Eq. 10: log D - log(1 - D) (= D's logit) - alpha * disagreement; the penalty only when given
        (imagined steps). The 'prob' variant (authors' code) uses D on a noisy input instead. `update_stats`
        False reads the penalty's running statistics without adding this batch (probes of a trained run)."""
        if self.cfg.reward == "env":
            r = self.task_reward(feat, action)
        elif self.cfg.reward == "prob":
            r = torch.sigmoid(self.logit(feat, action, noise=True))
        else:
            r = self.logit(feat, action)
        if disagreement is not None and self.cfg.alpha:
            r = r - self.penalty(disagreement, update_stats)
        return r

    def penalty(self, disagreement: torch.Tensor, update_stats: bool = True) -> torch.Tensor:
        """Eq. 10's conservative term alpha * disagreement; with penalty_norm the disagreement standardised by its
        running statistics (only how much more uncertain than usual a step is), which `update_stats` adds it to
        (until agent.penalty_norm_freeze updates have, if set)."""
        if self.cfg.penalty_norm:
            if update_stats:
                self.disagreement_stats.update(disagreement)
            disagreement = self.disagreement_stats.normalize(disagreement)
        return self.cfg.alpha * disagreement

    def task_reward(self, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The `agent.reward env` head's prediction of the task's reward for (s, a)."""
        return self.head(torch.cat([feat, action], -1)).squeeze(-1)

    def fit_task_reward(self, feat: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                        valid: torch.Tensor) -> torch.Tensor:
        """One step of the head on real pairs: r(s_t, a_t) -> the reward that followed, where `valid` (no episode
        start in between). Returns the loss."""
        fit = self.task_reward(feat, action) - reward
        loss = (fit.pow(2) * valid).sum() / valid.sum().clamp_min(1)
        clipped_step(self.head_opt, loss, self.head.parameters(), self.cfg.grad_clip)
        return loss

    def train_disc(self, expert: Pairs, policy: Pairs) -> dict[str, torch.Tensor]:
        """Eq. 8: one step of D on expert pairs (label 1) against the policy's (label 0), noise on both inputs
        (and agent.disc_grad_penalty between them); the input statistics first take in both sides. Returns the
        loss and D's accuracy and mean probability on each side's clean inputs."""
        expert, policy = ((f, a[..., : self.action_dim]) for f, a in (expert, policy))   # what D reads
        if self.cfg.disc_input_norm:
            self.input_stats.update(torch.cat([torch.cat(expert, -1), torch.cat(policy, -1)]))
        e_logit = self.logit(*expert, noise=True)
        p_logit = self.logit(*policy, noise=True)
        loss = (F.binary_cross_entropy_with_logits(e_logit, torch.ones_like(e_logit))
                + F.binary_cross_entropy_with_logits(p_logit, torch.zeros_like(p_logit)))
        m = {}
        if self.cfg.disc_grad_penalty:  # between each expert pair and a random policy pair, on what D's layers read
            pick = torch.randint(policy[0].shape[0], (expert[0].shape[0],), device=policy[0].device)
            gp = gradient_penalty(self.disc, self.disc_input(*expert), self.disc_input(policy[0][pick], policy[1][pick]))
            loss = loss + self.cfg.disc_grad_penalty * gp
            m["train/disc_grad_penalty"] = gp.detach()
        clipped_step(self.disc_opt, loss, self.disc.parameters(), self.cfg.grad_clip)
        with torch.no_grad():
            e_prob = torch.sigmoid(self.logit(*expert))
            p_prob = torch.sigmoid(self.logit(*policy))
        return {**m, "train/disc_loss": loss,
                "disc/expert_acc": (e_prob > 0.5).float().mean(), "disc/policy_acc": (p_prob < 0.5).float().mean(),
                "disc/expert_prob": e_prob.mean(), "disc/policy_prob": p_prob.mean()}
