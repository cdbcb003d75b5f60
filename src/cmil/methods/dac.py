"""Model-free pixel DAC (Discriminator-Actor-Critic, Kostrikov et al. 2019), the paper's DAC baseline.

Off-policy SAC (twin critics, temperature learnt towards `dac.target_entropy`) on a DrQ-style conv
encoder: images get random shifts, the critic's loss trains the encoder, the actor sees detached
features, and target critics and target encoder follow by Polyak averaging. A discriminator on
(encoded observation, action), with a conv encoder of its own trained by its loss, separates expert
transitions from replay transitions, trained with binary cross-entropy plus the WGAN-GP
interpolation penalty (Gulrajani et al. 2017) that DAC uses; its logit log D - log(1 - D) is the
reward. No environment reward is ever used.

Absorbing states (DAC, section 4.2): an episode that *terminates* (is_terminal) continues in a
single absorbing state that loops to itself under a fixed zero action, and its transitions are
sampled like any other, for the policy's episodes and the expert's alike. The discriminator thus
judges the absorbing state too, and the critic learns its value instead of assuming 0, which
removes the survival/termination bias of fixed reward signs. Episodes cut by a time limit bootstrap
from their last frame as usual. A feature is [encoder(image) * (1 - absorbing), absorbing].

Transitions (image[t], action[t + 1], image[t + 1]) are drawn uniformly over all transitions of the
shared replays' episodes by `data.replay.sample_transitions` (the stored `action[t + 1]` is the action
taken at frame t).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmil.config import Config
from cmil.data.replay import SequenceReplay, sample_transitions
from cmil.methods.base import Method, StatelessPolicy, register
from cmil.models.actor_critic import Actor, Discriminator, TwinQ, frozen, gradient_penalty
from cmil.models.networks import ConvEncoder, preprocess_image, random_shift


class PixelEncoder(nn.Module):
    """uint8 images (N, H, W, 3) -> features (N, feature_dim + 1): conv, linear, LayerNorm, tanh,
    then zeroed and flagged for absorbing states (the last entry is the absorbing indicator)."""

    def __init__(self, feature_dim: int, depth: int, image_size: int):
        super().__init__()
        self.conv = ConvEncoder(depth, image_size)
        self.proj = nn.Sequential(nn.Linear(self.conv.out_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.out_dim = feature_dim + 1

    def forward(self, image: torch.Tensor, absorbing: torch.Tensor, augment: bool = False) -> torch.Tensor:
        x = preprocess_image(random_shift(image) if augment else image)
        h = self.proj(self.conv(x))
        flag = absorbing.float().unsqueeze(-1)
        return torch.cat([h * (1.0 - flag), flag], -1)


def soft_target(reward: torch.Tensor, next_q: torch.Tensor, next_logp: torch.Tensor, temperature: torch.Tensor,
                gamma: float, next_absorbing: torch.Tensor) -> torch.Tensor:
    """SAC target r + gamma * (min_i Q'_i(s', a') - temperature * log pi(a'|s')).

    `next_q` is (2, N) with a' = pi(s') for ordinary next states and a' = 0 for absorbing ones; the
    absorbing state's action is fixed, so it carries no entropy term. There is no `done` mask:
    terminations lead into the absorbing state, which keeps bootstrapping."""
    entropy_term = temperature * next_logp * (~next_absorbing).float()
    return reward + gamma * (next_q.min(0).values - entropy_term)


class Temperature(nn.Module):
    """SAC's entropy temperature, learnt in log space (a module so that it is checkpointed)."""

    def __init__(self, init: float):
        super().__init__()
        self.log_value = nn.Parameter(torch.tensor(float(np.log(init))))

    def forward(self) -> torch.Tensor:
        return self.log_value.exp()


@register("dac")
class DAC(Method):
    """Pixel DAC inside the shared loop: seed episodes from the untrained (near-uniform) policy,
    then one SAC + discriminator step per `update`."""

    online = True
    uses_seed_episodes = True

    def __init__(self, cfg: Config, action_dim: int, device: torch.device):
        super().__init__(cfg, action_dim, device)
        d = cfg.dac
        self.encoder = PixelEncoder(d.feature_dim, d.cnn_depth, cfg.image_size).to(device)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        feat = self.encoder.out_dim
        self.actor = Actor(feat, action_dim, d.layers, d.hidden, d.actor_min_std).to(device)
        self.critic = TwinQ(feat, action_dim, d.layers, d.hidden).to(device)
        # The discriminator has its own encoder, trained by its loss: on the critic's (detached)
        # features, which differ little between images early on, a gradient-penalised D stays at 0.5
        # (measured on the point task: 0.05 feature distance between expert and replay, chance accuracy).
        self.disc_encoder = PixelEncoder(d.feature_dim, d.cnn_depth, cfg.image_size).to(device)
        self.disc = Discriminator(feat, action_dim, d.layers, d.hidden, noise_std=0.0).to(device)
        self.temperature = Temperature(d.init_temperature).to(device)
        self.target_entropy = d.target_entropy * action_dim
        self.critic_opt = torch.optim.Adam([*self.encoder.parameters(), *self.critic.q.parameters()], lr=d.lr, fused=True)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=d.lr, fused=True)
        self.temp_opt = torch.optim.Adam(self.temperature.parameters(), lr=d.lr, fused=True)
        self.disc_opt = torch.optim.Adam([*self.disc_encoder.parameters(), *self.disc.parameters()], lr=d.disc_lr, fused=True)
        self.rng = np.random.default_rng(cfg.seed + 7)

    # --- plumbing -------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "target_encoder": self.target_encoder, "actor": self.actor,
                "critic": self.critic, "disc_encoder": self.disc_encoder, "discriminator": self.disc,
                "temperature": self.temperature}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic": self.critic_opt, "actor": self.actor_opt, "temperature": self.temp_opt,
                "discriminator": self.disc_opt}

    def policy(self) -> StatelessPolicy:
        def act(image: torch.Tensor, deterministic: bool) -> torch.Tensor:
            feat = self.encoder(image, torch.zeros(1, dtype=torch.bool, device=self.device))
            dist = self.actor(feat)
            return dist.mode() if deterministic else dist.rsample()

        return StatelessPolicy(act, self.device)

    def _batch(self, replay: SequenceReplay, n: int) -> dict[str, torch.Tensor]:
        # The replay's own seeded generator, so DAC draws follow the same seeding as other methods.
        batch = sample_transitions(list(replay.episodes), n, getattr(replay, "rng", self.rng))
        return {k: torch.as_tensor(v, device=self.device) for k, v in batch.items()}

    def disc_logit(self, batch: dict[str, torch.Tensor], augment: bool = False) -> torch.Tensor:
        """D's logit on (image, action) of a transition batch."""
        return self.disc(self.disc_encoder(batch["image"], batch["absorbing"], augment), batch["action"])

    def reward(self, logit: torch.Tensor, batch: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """'logratio': log D - log(1 - D) = D's logit; 'positive': -log(1 - D) (DAC's original form).

        `batch` (the transitions the logits belong to) is unused here; it lets a subclass substitute a
        known reward to test the actor-critic alone."""
        return F.softplus(logit) if self.cfg.dac.reward == "positive" else logit

    # --- the update -----------------------------------------------------------------------
    def update(self, expert: SequenceReplay, replay: SequenceReplay) -> dict[str, float]:
        d = self.cfg.dac
        pol, exp = self._batch(replay, d.batch_size), self._batch(expert, d.batch_size)
        m: dict[str, float] = {}

        # Encoder forward: online on obs (trained by the critic), target on next obs (DrQ).
        feat = self.encoder(pol["image"], pol["absorbing"], augment=True)
        with torch.no_grad():
            next_feat = self.encoder(pol["next_image"], pol["next_absorbing"], augment=True)
            next_feat_t = self.target_encoder(pol["next_image"], pol["next_absorbing"], augment=True)

        # Discriminator: expert vs replay (its encoder's feature, action), BCE + gradient penalty on
        # the head's input (the encoder's LayerNorm + tanh output is bounded, so the penalty still binds).
        exp_in = (self.disc_encoder(exp["image"], exp["absorbing"], augment=True), exp["action"])
        pol_in = (self.disc_encoder(pol["image"], pol["absorbing"], augment=True), pol["action"])
        e_logit, p_logit = self.disc(*exp_in), self.disc(*pol_in)
        bce = (F.binary_cross_entropy_with_logits(e_logit, torch.ones_like(e_logit))
               + F.binary_cross_entropy_with_logits(p_logit, torch.zeros_like(p_logit)))
        gp = gradient_penalty(self.disc, exp_in, pol_in)
        self.disc_opt.zero_grad(set_to_none=True)
        (bce + d.grad_penalty * gp).backward()
        self.disc_opt.step()
        m.update(_disc_stats(e_logit.detach(), p_logit.detach()))

        # Critic: soft TD target with the learnt reward; absorbing next states take the zero action.
        temp = self.temperature().detach()
        with torch.no_grad():
            reward = self.reward(p_logit.detach(), pol)  # D just before this step's update, same augmentation
            dist = self.actor(next_feat)
            next_act = dist.rsample()
            next_logp = dist.log_prob(next_act)
            next_act = torch.where(pol["next_absorbing"][:, None], torch.zeros_like(next_act), next_act)
            target = soft_target(reward, self.critic.target_values(next_feat_t, next_act), next_logp, temp,
                                 d.gamma, pol["next_absorbing"])
        q = self.critic(feat, pol["action"])
        critic_loss = (q - target).pow(2).mean(-1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        # Actor (and temperature) on detached features of non-absorbing states; optional BC term.
        live = ~pol["absorbing"]
        if not live.any():  # a batch of absorbing self-loops only: nothing for the actor to learn
            live = torch.ones_like(live)
        actor_feat = feat.detach()[live]
        with frozen(self.critic):
            dist = self.actor(actor_feat)
            action = dist.rsample()
            logp = dist.log_prob(action)
            actor_loss = (temp * logp - self.critic(actor_feat, action).min(0).values).mean()
            if d.bc_weight:
                e_live = ~exp["absorbing"]
                with torch.no_grad():
                    exp_feat = self.encoder(exp["image"][e_live], exp["absorbing"][e_live], augment=True)
                bc = -self.actor(exp_feat).log_prob(exp["action"][e_live].clamp(-1 + 1e-4, 1 - 1e-4)).mean()
                actor_loss = actor_loss + d.bc_weight * bc
                m["train/bc_loss"] = bc.item()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        temp_loss = -(self.temperature.log_value * (logp.detach() + self.target_entropy)).mean()
        self.temp_opt.zero_grad(set_to_none=True)
        temp_loss.backward()
        self.temp_opt.step()

        self._polyak(d.tau)
        self.updates += 1
        m.update({"train/disc_loss": bce.item(), "train/grad_penalty": gp.item(),
                  "train/critic_loss": critic_loss.item(), "train/actor_loss": actor_loss.item(),
                  "train/temperature": temp.item(), "train/entropy": -logp.mean().item(),
                  "train/reward": reward.mean().item(), "train/q_mean": q.mean().item()})
        return m

    @torch.no_grad()
    def _polyak(self, tau: float) -> None:
        for net, target in ((self.critic.q, self.critic.target), (self.encoder, self.target_encoder)):
            for p, tp in zip(net.parameters(), target.parameters(), strict=True):
                tp.lerp_(p, tau)

    @torch.no_grad()
    def diagnostics(self, expert: SequenceReplay, replay: SequenceReplay) -> dict[str, float]:
        """The current discriminator on a fresh, unaugmented batch of expert and replay transitions."""
        if len(replay.episodes) == 0:
            return {}
        n = self.cfg.dac.batch_size
        pol, exp = self._batch(replay, n), self._batch(expert, n)
        e_logit, p_logit = self.disc_logit(exp), self.disc_logit(pol)
        out = _disc_stats(e_logit, p_logit)
        out["bound/distribution_match"] = out["disc/expert_prob"] - out["disc/policy_prob"]
        return out


def _disc_stats(e_logit: torch.Tensor, p_logit: torch.Tensor) -> dict[str, float]:
    return {"disc/expert_acc": (e_logit > 0).float().mean().item(),
            "disc/policy_acc": (p_logit < 0).float().mean().item(),
            "disc/expert_prob": torch.sigmoid(e_logit).mean().item(),
            "disc/policy_prob": torch.sigmoid(p_logit).mean().item(),
            "disc/expert_logit": e_logit.mean().item(), "disc/policy_logit": p_logit.mean().item()}
