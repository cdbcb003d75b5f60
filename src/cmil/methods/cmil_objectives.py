"""CMIL's objectives, equation by equation (Kolev et al. 2024, section 5): the BC term, imagination, the actor's
eq. 12 and its variants' targets, the critics' eqs. 13-15, and the anchor's and D's inputs. `CMIL` (cmil.methods.cmil)
inherits them and composes them into one update; they read the agent's modules (`actor`, `critic`, `wm`,
`imitation`, `teacher`, `anchor`) and `cfg.agent`, and step no optimiser.
"""

from __future__ import annotations

import numpy as np
import torch

from cmil.methods.teacher import LABEL_KEY
from cmil.models.actor_critic import TruncNormal, lambda_returns


def weighted_average(candidates: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The softmax-weighted average (N, A) of candidate actions (K, N, A) by their scores (K, N), each state's scores
    standardised over its candidates (temperature 1): agent.actor_objective 'weighted''s regression target."""
    weights = torch.softmax((scores - scores.mean(0)) / scores.std(0).clamp_min(1e-8), 0)
    return (weights[..., None] * candidates).sum(0)


class CMILObjectives:
    """The losses and targets of one CMIL update, mixed into `CMIL`: in the order the update reads them, imagination
    (eq. 11's rollout), eq. 12's lambda objective and the weighted variant's target, the critics' loss (eqs. 13-15),
    the BC term, and what the discriminator and the anchor read."""

    def imagine(self, start: dict[str, torch.Tensor], horizon: int):
        """Roll the policy through the learnt prior for `horizon` steps.

        Returns features (H+1, N, F), actions (H+1, N, A) (a^t ~ pi(s^t), reparameterised),
        disagreement (H, N) of each transition (s^t, a^t) -> s^{t+1} (eq. 9), and entropies (H+1, N)."""
        state = start
        feats, actions, dis, ents = [], [], [], []
        for t in range(horizon + 1):
            f = self.wm.agent_feat(state)
            dist = self.actor(f.detach() if self.cfg.agent.stop_grad_actor_input else f)
            action = dist.rsample()
            feats.append(f)
            actions.append(action)
            ents.append(dist.entropy())
            if t < horizon:
                state, d = self.wm.imagine_step(state, action)
                dis.append(d)
        return torch.stack(feats), torch.stack(actions), torch.stack(dis), torch.stack(ents)

    @torch.no_grad()
    def weighted_target(self, feat: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """agent.actor_objective 'weighted': the softmax-weighted average (N, A) of candidate actions drawn around
        the actor's `mean` at `feat` (N, F), each state's scores (agent.weighted_score) standardised over its
        candidates."""
        a = self.cfg.agent
        noise = torch.randn((a.weighted_candidates, *mean.shape), device=mean.device)
        cand = (mean + a.weighted_sigma * noise).clamp(-1, 1)                               # (K, N, A)
        feat_k = feat.expand(a.weighted_candidates, *feat.shape)
        if a.weighted_score == "disc":
            score = self.imitation.logit(feat_k, cand)
        else:
            score = self.critic(feat_k, cand).min(0).values
        return weighted_average(cand, score.reshape(cand.shape[:-1]))

    def lambda_objective(self, reward: torch.Tensor, q_min: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The lambda-returns V^lambda of imagined rewards (H, N) bootstrapped by the critics' min Q (H+1, N)
        (eq. 11), and eq. 12's per-step objective lambda * V^lambda + (1 - lambda) * V0."""
        a = self.cfg.agent
        returns = lambda_returns(reward, q_min, a.gamma, a.lam)
        return returns, a.lam * returns + (1 - a.lam) * q_min[:-1]

    def _target_values(self, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        q = self.critic.target_values(feat, action)
        if self.cfg.agent.critic_target == "random":
            return q[int(np.random.randint(2))]
        return q.min(0).values

    def critic_loss(self, feat, act_taken, is_first, imag_feat, imag_act, reward, disc_feat=None, q_imag=None):
        """Eq. 13 on imagined steps + eq. 14 on real transitions, summed (eq. 15).

        feat/act_taken/is_first: the real sequences (2B, L, ...); imag_feat/imag_act: (H+1, N, ...);
        disc_feat: what the reward reads on the real frames (`_disc_states`; default `feat`); q_imag: both
        critics on imag_feat[:-1], imag_act[:-1] if already computed (its graph may reach the actor: step the
        critics with a backward restricted to their parameters)."""
        a = self.cfg.agent
        with torch.no_grad():
            # Targets recomputed with the target critics; the last imagined state bootstraps.
            v0 = self._target_values(imag_feat, imag_act)                         # (H+1, N)
            target = lambda_returns(reward, v0, a.gamma, a.lam)                   # (H, N)
        q = self.critic(imag_feat[:-1], imag_act[:-1]) if q_imag is None else q_imag  # (2, H, N)
        model_loss = (q - target).pow(2).mean(-1).mean(-1).sum()                  # eq. 13, both critics
        metrics = {"train/critic_model_loss": model_loss.detach()}
        loss = model_loss
        if a.real_critic_loss:  # imagination then started from every real state, in (b, t) order
            # Eq. 14: Q(s_j, a_j) -> r(s_j, a_j) + gamma * ((1 - lam) V0(s_{j+1}) + lam V^lambda(s_{j+1})),
            # with s_{j+1} the real next posterior and V^lambda from its imagined continuation.
            n_b, n_l = feat.shape[:2]
            with torch.no_grad():
                r_real = self.imitation.reward((feat if disc_feat is None else disc_feat)[:, :-1], act_taken,
                                               None)  # no penalty on real transitions
                v0_next = v0[0].reshape(n_b, n_l)[:, 1:]
                vlam_next = target[0].reshape(n_b, n_l)[:, 1:]
                y = r_real + a.gamma * ((1 - a.lam) * v0_next + a.lam * vlam_next)
                valid = (~is_first[:, 1:]).float()                                # no target across episodes
            q_real = self.critic(feat[:, :-1], act_taken)                         # (2, B, L-1)
            data_loss = ((q_real - y).pow(2) * valid).sum((-1, -2)).div(valid.sum().clamp_min(1)).sum()
            loss = loss + data_loss
            metrics["train/critic_data_loss"] = data_loss.detach()
        return loss, metrics


    def bc_loss(self, feat: torch.Tensor, action: torch.Tensor, shaping: bool = False,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        """The BC term on expert states (N, L, F): -log pi(a^E | s^E), or the squared error of pi's mean action
        (plus, with agent.bc_fit_std, the NLL of the std around the detached mean; not when `shaping` the
        world model, which should learn only what predicts the action). `weight` (N,): each window's weight in
        the mean (agent.self_imitation; 0 = not a demonstration)."""
        a = self.cfg.agent

        def mean(x: torch.Tensor) -> torch.Tensor:   # over windows (dim -2) and frames, weighted by window
            return x.mean() if weight is None else (x * weight[:, None]).mean() / weight.mean()

        dist, head_means = self.actor.with_head_means(feat)
        target = action.clamp(-1 + 1e-4, 1 - 1e-4)
        if a.bc_loss == "nll":
            return -mean(dist.log_prob(target))
        # Every head fits the expert's action on its own (agent.actor_heads; one head: the actor's mean).
        loss = mean((head_means - action).pow(2).sum(-1))
        if a.bc_fit_std and not shaping:
            loss = loss - mean(TruncNormal(dist.mean.detach(), dist.std).log_prob(target))
        return loss


    def _disc_states(self, feat: torch.Tensor, prior_feat: torch.Tensor, is_first: torch.Tensor) -> torch.Tensor:
        """The features D and the reward read on real frames (agent.disc_states): the posterior ones, or the
        model's one-step prior prediction of each frame, except where the frame has no predecessor in the
        window (its first frame and episode starts), which keep the posterior."""
        if self.cfg.agent.disc_states == "posterior":
            return feat
        predicted = ~is_first.bool()
        predicted[:, 0] = False
        return torch.where(predicted[..., None], prior_feat, feat)


    @torch.no_grad()
    def _anchor_target(self, rep: dict[str, torch.Tensor], feat: torch.Tensor) -> torch.Tensor:
        """The anchor's frozen target on the replay windows' states (frames 0..L-2): the pixel BC teacher's action
        on their frames (agent.anchor_target 'bc'; labelled as the episode entered the replay, or answered now for
        a replay filled without `label_episode`), or the pretrained actor's mean action on their features."""
        if LABEL_KEY in rep:
            return rep[LABEL_KEY][:, :-1]
        return self.teacher(rep["image"][:, :-1]) if self.teacher is not None else self.anchor(feat).mean

    def _teacher_embed_loss(self, image: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        """agent.teacher_embed_weight's term: the squared error of the head's prediction from `feat` (..., F) of the
        teacher's embedding of `image` (..., H, W, 3), centred per unit and over the RMS of the whole target."""
        with torch.no_grad():
            target = self.teacher.embed(image).float()
            target = target - target.flatten(0, -2).mean(0)
            target = target / target.pow(2).mean().sqrt().clamp_min(1e-6)
        return (self.teacher_embed_head(feat) - target).pow(2).mean()

    @torch.no_grad()
    def _anchor_kept(self, feat: torch.Tensor, target: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """agent.anchor_filter 'q': 1 where min_i Q_i(s, anchor target) >= min_i Q_i(s, actor's mean), else 0."""
        q_target = self.critic(feat, target.clamp(-1, 1)).min(0).values
        return (q_target >= self.critic(feat, mean).min(0).values).float()
