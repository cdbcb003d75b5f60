"""The world model: conv encoder, RSSM with an ensemble of prior heads, conv decoder (DreamerV2 + CMIL).

Latent state (a dict of tensors): `deter` h_t (GRU state), `stoch` s_t (a sample), and the `mean`/`std`
of the Gaussian s_t was drawn from. The feature the agent sees is concat(stoch, deter).

    prior      h_t = GRU(h_{t-1}, ELU(W [s_{t-1}, a_t]))        (a_t: the action that LED to frame t)
               p_k(s_t | h_t), k = 1..K                         (K heads, one drawn per step)
    posterior  q(s_t | h_t, embed(x_t))
    decoder    p(x_t | s_t, h_t) = Normal(mean(s_t, h_t), 1)

At every prior step one head k is drawn uniformly, one index for the whole batch; it alone gives the
prior sample and the KL term (paper eq. 1 with Rafailov et al.'s latent ensemble), so a head only gets
gradient at the steps where it was drawn. All K means are computed anyway, so the disagreement
std_k(mu_k) averaged over latent dims (paper eq. 9) is available at every step.

Speed: in `observe` the prior heads do not feed back into the recurrence (the posterior sample does),
so the loop runs only the GRU and the posterior, and the heads run after it on every (b, t) at once:
all K as one batched matmul without gradient (for the disagreement), and each drawn head, with
gradient, on the steps it was drawn for (so backward costs one head, not K). The parts of the input
layers that do not depend on the recurrent state (the action and the image embedding) are also
computed for all steps before the loop. See docs/world_model.md.

`graph_safe` (set by a method that replays its update as a CUDA graph, `Config.cuda_graph`): no step
reads a value back to the host, and every tensor has the same shape at every update. Heads are then
drawn on the model's device, filtering resets the state at every step (multiplying by 1 where no
episode starts), the drawn heads are applied as one batched matmul over per-step gathered weights
instead of grouped by head, and `loss_terms` returns its metrics as tensors. Same values (tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cmil.config_sections import WorldModelConfig
from cmil.models.networks import (
    ConvDecoder,
    ConvEncoder,
    EnsembleLinear,
    LayerNormGRUCell,
    diag_gaussian_kl,
    gaussian_std,
    preprocess_image,
    random_shift,
    subpixel_layout,
    to_unit_range,
)
from cmil.models.optim import clipped_step, decoupled_adam

State = dict[str, torch.Tensor]
STATE_KEYS = ("deter", "stoch", "mean", "std")


class _HalfSquaredError(torch.autograd.Function):
    """0.5 * sum((pred - target)^2); its backward is a single pass, grad * (pred - target).

    Same value and gradient as 0.5 * F.mse_loss(..., reduction='sum'), which on the CPU spends two
    extra full-image passes in backward (expanding the scalar gradient, then the elementwise kernel).
    """

    @staticmethod
    def forward(ctx, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = pred - target
        ctx.save_for_backward(diff)
        return 0.5 * torch.linalg.vector_norm(diff).square()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (diff,) = ctx.saved_tensors
        return diff * grad, None


FOCUS_THRESHOLD = 0.05
"""A pixel's channel differs from a reference when it is further than this from it (in [-0.5, 0.5] units)."""


def focus_pixels(frames: torch.Tensor, focus: str) -> torch.Tensor:
    """Float frames (B, T, ...) -> bool, the pixels `wm.recon_focus` picks: 'change', where a frame differs from
    the frame before or after it; 'foreground', where it differs from the per-pixel median of all B * T frames;
    'both', either."""
    if focus == "foreground":
        return (frames - frames.flatten(0, 1).median(0).values).abs() > FOCUS_THRESHOLD
    if focus == "both":
        return focus_pixels(frames, "change") | focus_pixels(frames, "foreground")
    step = (frames[:, 1:] - frames[:, :-1]).abs() > FOCUS_THRESHOLD
    changed = torch.zeros_like(frames, dtype=torch.bool)
    changed[:, 1:] |= step
    changed[:, :-1] |= step
    return changed


def focus_scale(frames: torch.Tensor, focus: str, weight: float) -> torch.Tensor:
    """The factor whose square weights each pixel's squared error: 1 + `weight` on the focus pixels, 1 elsewhere."""
    return 1.0 + (math.sqrt(1.0 + weight) - 1.0) * focus_pixels(frames, focus).float()


def image_to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Preprocessed float (..., 3, H, W) in [-0.5, 0.5] -> uint8 (..., H, W, 3); inverse of preprocess_image."""
    x = (image + 0.5).mul(255.0).clamp(0.0, 255.0).round().to(torch.uint8)
    return x.permute(*range(x.dim() - 3), -2, -1, -3)


class WorldModel(nn.Module):
    """RSSM world model with Gaussian latents and K prior heads, learnt from 64x64 uint8 images."""

    def __init__(self, action_dim: int, cfg: WorldModelConfig, image_size: int = 64):
        super().__init__()
        self.cfg, self.action_dim, self.image_size = cfg, action_dim, image_size
        S, D, H, K = cfg.stoch, cfg.deter, cfg.hidden, cfg.ensemble
        self.encoder = ConvEncoder(cfg.encoder_depth or cfg.cnn_depth, image_size)
        self.embed_dim = self.encoder.out_dim
        self.img_in = nn.Linear(S + action_dim, H)
        self.gru = LayerNormGRUCell(H, D)
        # The K prior heads, each Dense(hidden) -> ELU -> Dense(2 * stoch), as two batched layers.
        self.prior_hidden = EnsembleLinear(K, D, H)
        self.prior_out = EnsembleLinear(K, H, 2 * S)
        # The posterior reads h_t and the image (DreamerV2), or the image alone (cfg.posterior == "image").
        self.post_deter = D if cfg.posterior == "filter" else 0
        self.post_hidden = nn.Linear(self.post_deter + self.embed_dim, H)
        self.post_out = nn.Linear(H, 2 * S)
        self.decoder = ConvDecoder(S + D, cfg.cnn_depth, image_size)
        self.feat_dim = S + D
        self.agent_feat_dim = S if cfg.agent_feat == "stoch" else S + D
        self.optimizer: torch.optim.Optimizer | None = None
        self.graph_safe = False  # see the module docstring

    def representation_parameters(self) -> list[nn.Parameter]:
        """The path from an image to the posterior: the encoder and the posterior layers."""
        return [*self.encoder.parameters(), *self.post_hidden.parameters(), *self.post_out.parameters()]

    @property
    def device(self) -> torch.device:
        return self.post_out.weight.device

    # --- small pieces -------------------------------------------------------------------------
    def initial(self, batch_size: int) -> State:
        """The all-zeros state an episode starts from."""
        S, D = self.cfg.stoch, self.cfg.deter
        dev = self.device
        return {"deter": torch.zeros(batch_size, D, device=dev), "stoch": torch.zeros(batch_size, S, device=dev),
                "mean": torch.zeros(batch_size, S, device=dev), "std": torch.zeros(batch_size, S, device=dev)}

    @staticmethod
    def feat(state: State) -> torch.Tensor:
        """The decoder's feature: concat(stoch, deter)."""
        return torch.cat([state["stoch"], state["deter"]], -1)

    def agent_feat(self, state: State) -> torch.Tensor:
        """The feature the agent (actor, critics, discriminator) reads (`cfg.agent_feat`): concat(stoch, deter)
        ('sample'), the stochastic state's mean in place of its sample ('mean'), or that mean alone ('stoch')."""
        if self.cfg.agent_feat == "stoch":
            return state["mean"]
        stoch = state["mean"] if self.cfg.agent_feat == "mean" else state["stoch"]
        return torch.cat([stoch, state["deter"]], -1)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 images (..., H, W, 3) -> embeddings (..., E)."""
        return self.encoder(preprocess_image(image))

    def frame_feat(self, image: torch.Tensor, shift: bool = False) -> torch.Tensor:
        """uint8 frames (..., H, W, 3) -> the agent's feature of each frame alone (posterior 'image',
        agent_feat 'stoch': the image posterior's mean), optionally with an independent random shift per frame."""
        if shift:
            image = random_shift(image.reshape(-1, *image.shape[-3:])).reshape(image.shape)
        x = preprocess_image(image)
        hidden = F.elu(self.post_hidden(self.encoder(x)))
        return self.post_out(hidden)[..., : self.cfg.stoch]

    def decode(self, feat: torch.Tensor) -> torch.Tensor:
        """Features (..., F) -> image means (..., 3, 64, 64) in the preprocessed space."""
        return self.decoder(feat)

    def draw_heads(self, n: int | None = None) -> torch.Tensor:
        """Uniformly drawn head indices, a scalar or n of them: on the CPU from torch's global RNG, or with
        `graph_safe` on the model's device from its generator (a CUDA graph cannot replay a host draw)."""
        device = self.device if self.graph_safe else "cpu"
        return torch.randint(self.cfg.ensemble, () if n is None else (n,), device=device)

    def prior_stats(self, deter: torch.Tensor) -> torch.Tensor:
        """All K heads on deter (N, D) -> raw stats (K, N, 2S): means, then pre-activation stds."""
        return self.prior_out(F.elu(self.prior_hidden(deter)))

    def prior_heads(self, deter: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All K heads on deter (N, D) -> means and stds, each (K, N, S)."""
        mean, raw_std = self.prior_stats(deter).chunk(2, -1)
        return mean, gaussian_std(raw_std, self.cfg.min_std)

    @staticmethod
    def disagreement(means: torch.Tensor) -> torch.Tensor:
        """Eq. 9: std over the heads (dim 0, population std) of their means, averaged over latent dims.

        Written out as sqrt(mean of squared deviations): the same values as `means.std(0, correction=0)`,
        whose CPU kernel is ~20x slower for these small (K, N, S) shapes (a generic Welford reduction)."""
        centred = means - means.mean(0)
        return centred.square().mean(0).sqrt().mean(-1)

    def _gaussian(self, stats: torch.Tensor, noise: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        mean, raw_std = stats.chunk(2, -1)
        std = gaussian_std(raw_std, self.cfg.min_std)
        stoch = mean if noise is None else torch.addcmul(mean, std, noise)
        return mean, std, stoch

    @staticmethod
    def _reset(state: State, action: torch.Tensor, is_first: torch.Tensor) -> tuple[State, torch.Tensor]:
        keep = (~is_first.bool()).to(action.dtype).unsqueeze(-1)
        return {k: state[k] * keep for k in STATE_KEYS}, action * keep

    # --- single steps -------------------------------------------------------------------------
    def imagine_step(self, state: State, action: torch.Tensor, sample: bool = True,
                     head: int | torch.Tensor | None = None) -> tuple[State, torch.Tensor]:
        """One prior step from `state` with `action` (B, A), through a freshly drawn head (or `head`).

        Reparameterised: differentiable w.r.t. state, action and the model. Returns the next state and
        the disagreement (B,) of all K heads at it (differentiable too: it enters CMIL's reward).
        `sample=False` takes the head's mean instead of a sample.

        The head index stays a tensor (no `int()`): a host read would break a `torch.compile` graph at
        every step, and on a GPU it would wait for the device.
        """
        x = F.elu(self.img_in(torch.cat([state["stoch"], action], -1)))
        deter = self.gru(x, state["deter"])
        stats = self.prior_stats(deter)  # (K, B, 2S)
        k = self.draw_heads() if head is None else torch.as_tensor(head)
        mean, raw_std = stats.index_select(0, k.reshape(1).to(stats.device))[0].chunk(2, -1)
        std = gaussian_std(raw_std, self.cfg.min_std)  # the drawn head's only: the others need no std
        stoch = torch.addcmul(mean, std, torch.randn_like(mean)) if sample else mean
        disagreement = self.disagreement(stats[..., : self.cfg.stoch])
        return {"deter": deter, "stoch": stoch, "mean": mean, "std": std}, disagreement

    def obs_step(self, prev_state: State, prev_action: torch.Tensor, embed: torch.Tensor,
                 is_first: torch.Tensor, sample: bool = True) -> tuple[State, State]:
        """One filtering step; state and action are zeroed where `is_first` (B,). Returns (post, prior).

        The prior also holds 'disagreement' (B,). Used when acting, one env step at a time.
        """
        prev_state, prev_action = self._reset(prev_state, prev_action, is_first)
        prior, disagreement = self.imagine_step(prev_state, prev_action, sample)
        prior["disagreement"] = disagreement
        hidden = F.elu(self.post_hidden(torch.cat([prior["deter"][..., : self.post_deter], embed], -1)))
        noise = torch.randn_like(prior["mean"]) if sample else None
        mean, std, stoch = self._gaussian(self.post_out(hidden), noise)
        return {"deter": prior["deter"], "stoch": stoch, "mean": mean, "std": std}, prior

    # --- sequences ----------------------------------------------------------------------------
    def observe(self, embed: torch.Tensor, action: torch.Tensor, is_first: torch.Tensor,
                state: State | None = None, sample: bool = True) -> tuple[State, State]:
        """Filter a sequence: embed (B, T, E), action (B, T, A) (action[:, t] led to frame t), is_first (B, T).

        Returns (post, prior) with a time dim on every tensor, equal to T calls of `obs_step`. The prior
        also holds 'disagreement' (B, T), detached (a diagnostic: CMIL penalises imagined steps only),
        and 'head' (T,), the head drawn at each step.
        """
        B, T = embed.shape[:2]
        S = self.cfg.stoch
        state = self.initial(B) if state is None else state
        keep = (~is_first.bool()).to(embed.dtype)  # (B, T)
        # One host sync per sequence, none per step; graph_safe resets at every step instead (no sync).
        resets = [True] * T if self.graph_safe else is_first.bool().any(0).tolist()
        # Parts of the input layers that do not depend on the recurrence, for all steps at once (T, B, H).
        w_in = self.img_in.weight
        act_term = F.linear(action * keep.unsqueeze(-1), w_in[:, S:], self.img_in.bias).transpose(0, 1)
        w_stoch = w_in[:, :S].t()
        w_post = self.post_hidden.weight
        Dp = self.post_deter
        post_term = F.linear(embed, w_post[:, Dp:], self.post_hidden.bias).transpose(0, 1)
        w_post_deter = w_post[:, :Dp].t()
        noise = torch.randn(T, B, S, device=embed.device, dtype=embed.dtype) if sample else None
        keep_tm = keep.t().unsqueeze(-1)  # (T, B, 1)

        deter, stoch = state["deter"], state["stoch"]
        deters, means, stds, stochs = [], [], [], []
        for t in range(T):
            if resets[t]:
                deter, stoch = deter * keep_tm[t], stoch * keep_tm[t]
            x = F.elu(torch.addmm(act_term[t], stoch, w_stoch))
            deter = self.gru(x, deter)
            hidden = F.elu(torch.addmm(post_term[t], deter[:, :Dp], w_post_deter))
            mean, std, stoch = self._gaussian(self.post_out(hidden), None if noise is None else noise[t])
            deters.append(deter)
            means.append(mean)
            stds.append(std)
            stochs.append(stoch)
        deter_seq = torch.stack(deters, 1)
        post = {"deter": deter_seq, "stoch": torch.stack(stochs, 1), "mean": torch.stack(means, 1),
                "std": torch.stack(stds, 1)}
        return post, self._sequence_prior(deter_seq, sample)

    def observe_acting(self, embed: torch.Tensor, is_first: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor],
                       first_action: torch.Tensor, state: State | None = None, sample: bool = True) -> State:
        """Filter a sequence as an acting agent does: the action fed in before frame t + 1 is `act` of
        the feature at frame t (without gradient), not the recorded one. `first_action` (B, A) leads to
        frame 0. Returns the posterior (B, T, ...), differentiable w.r.t. the model like `observe`'s.

        Filtering the demos' images with the policy's own actions gives the states the policy would be
        in on those images, so a BC loss on them cannot lean on the expert's action history."""
        B, T = embed.shape[:2]
        state = self.initial(B) if state is None else state
        deter, stoch, action = state["deter"], state["stoch"], first_action
        Dp = self.post_deter
        post_term = F.linear(embed, self.post_hidden.weight[:, Dp:], self.post_hidden.bias)
        w_post_deter = self.post_hidden.weight[:, :Dp].t()
        keep = (~is_first.bool()).to(embed.dtype).unsqueeze(-1)  # (B, T, 1)
        deters, means, stds, stochs = [], [], [], []
        for t in range(T):
            deter, stoch, action = deter * keep[:, t], stoch * keep[:, t], action * keep[:, t]
            deter = self.gru(F.elu(self.img_in(torch.cat([stoch, action], -1))), deter)
            hidden = F.elu(torch.addmm(post_term[:, t], deter[:, :Dp], w_post_deter))
            noise = torch.randn_like(deter[:, : self.cfg.stoch]) if sample else None
            mean, std, stoch = self._gaussian(self.post_out(hidden), noise)
            with torch.no_grad():
                action = act(self.agent_feat({"stoch": stoch, "mean": mean, "deter": deter}))
            deters.append(deter)
            means.append(mean)
            stds.append(std)
            stochs.append(stoch)
        return {"deter": torch.stack(deters, 1), "stoch": torch.stack(stochs, 1), "mean": torch.stack(means, 1),
                "std": torch.stack(stds, 1)}

    def _sequence_prior(self, deter: torch.Tensor, sample: bool) -> State:
        """The prior at every (b, t) of deter (B, T, D) from the head drawn for step t, plus the
        disagreement of all K heads (computed without gradient: a diagnostic on real data)."""
        B, T, D = deter.shape
        heads = self.draw_heads(T)
        with torch.no_grad():
            means = self.prior_stats(deter.detach().reshape(B * T, D))[..., : self.cfg.stoch]
            disagreement = self.disagreement(means).view(B, T)
        noise = torch.randn(B, T, self.cfg.stoch, device=deter.device, dtype=deter.dtype) if sample else None
        drawn = self._gathered_heads if self.graph_safe else self._drawn_heads
        mean, std, stoch = self._gaussian(drawn(deter, heads), noise)
        return {"deter": deter, "stoch": stoch, "mean": mean, "std": std, "disagreement": disagreement,
                "head": heads}

    def _drawn_heads(self, deter: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        """Head heads[t] applied to deter[:, t] for every t: (B, T, D) -> raw stats (B, T, 2S).

        Steps are grouped by head, so each drawn head runs once on its steps (forward and backward
        cost one head, not K; the undrawn heads are not touched)."""
        B, T, D = deter.shape
        w1, b1 = self.prior_hidden.weight, self.prior_hidden.bias
        w2, b2 = self.prior_out.weight, self.prior_out.bias
        outs, order = [], []
        for k in heads.unique().tolist():
            steps = (heads == k).nonzero().squeeze(1)
            x = deter.index_select(1, steps.to(deter.device)).reshape(-1, D)
            hidden = F.elu(torch.addmm(b1[k], x, w1[k]))
            outs.append(torch.addmm(b2[k], hidden, w2[k]).view(B, len(steps), -1))
            order.append(steps)
        inverse = torch.argsort(torch.cat(order)).to(deter.device)
        return torch.cat(outs, 1).index_select(1, inverse)

    def _gathered_heads(self, deter: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        """`_drawn_heads` without host reads or data-dependent shapes: each step's head weights are gathered
        into a (T, ...) stack and applied as one batched matmul (the same FLOPs; the gather's backward
        accumulates into the drawn heads only)."""
        heads = heads.to(deter.device)
        w1, b1 = self.prior_hidden.weight.index_select(0, heads), self.prior_hidden.bias.index_select(0, heads)
        w2, b2 = self.prior_out.weight.index_select(0, heads), self.prior_out.bias.index_select(0, heads)
        hidden = F.elu(torch.baddbmm(b1, deter.transpose(0, 1), w1))  # (T, B, H)
        return torch.baddbmm(b2, hidden, w2).transpose(0, 1)

    # --- training -----------------------------------------------------------------------------
    def kl_loss(self, post: State, prior: State, weight: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Balanced KL with free nats (DreamerV2): returns (loss, mean KL(post || prior) before clamping).

        loss = b * max(mean KL(sg(post) || prior), free) + (1 - b) * max(mean KL(post || sg(prior)), free),
        b = cfg.kl_balance; the means run over batch and time (free nats on the batch average), weighted by
        `weight` (same leading shape) where given.
        """
        cfg = self.cfg
        pm, ps, qm, qs = prior["mean"], prior["std"], post["mean"], post["std"]

        def average(kl: torch.Tensor) -> torch.Tensor:
            return kl.mean() if weight is None else (kl * weight).sum() / weight.sum().clamp(min=1.0)

        to_prior = average(diag_gaussian_kl(qm.detach(), qs.detach(), pm, ps))
        to_post = average(diag_gaussian_kl(qm, qs, pm.detach(), ps.detach()))
        loss = (cfg.kl_balance * to_prior.clamp(min=cfg.kl_free)
                + (1.0 - cfg.kl_balance) * to_post.clamp(min=cfg.kl_free))
        return loss, to_prior.detach()

    def overshoot_kl(self, post: State, prior: State, action: torch.Tensor, is_first: torch.Tensor) -> torch.Tensor:
        """Latent overshooting (`cfg.overshoot_steps`): the balanced KL of the prior rolled k = 2 .. K steps open
        loop on the recorded actions against the posterior of the frame it predicts, averaged over k.

        The rollout starts from the sequence's one-step priors (frame t + 1 predicted from the posterior at t) and
        steps each through a freshly drawn head, as imagination does; a prediction is left out once an `is_first`
        lies between its start and its target (the episode changed there)."""
        B, T = action.shape[:2]
        steps = min(self.cfg.overshoot_steps, T - 1)
        not_first = (~is_first.bool()).to(post["mean"].dtype)
        state = {k: prior[k][:, 1:] for k in STATE_KEYS}  # state[:, i] predicts frame i + k, here k = 1
        valid = not_first[:, 1:]
        total = post["mean"].new_zeros(())
        for k in range(2, steps + 1):
            n = T - k
            flat = {key: v[:, :n].reshape(B * n, -1) for key, v in state.items()}
            nxt, _ = self.imagine_step(flat, action[:, k:].reshape(B * n, -1))
            state = {key: v.view(B, n, -1) for key, v in nxt.items()}
            valid = valid[:, :n] * not_first[:, k:]
            target = {key: post[key][:, k:] for key in ("mean", "std")}
            total = total + self.kl_loss(target, state, valid)[0]
        return total / max(steps - 1, 1)

    def loss(self, batch: dict[str, torch.Tensor], state: State | None = None
             ) -> tuple[torch.Tensor, State, dict[str, float]]:
        """The world-model loss (eq. 1) on a batch: the sum of `loss_terms`. Returns (loss, post, metrics)."""
        terms, post, metrics = self.loss_terms(batch, state)
        loss = terms["recon"] + terms["kl"]
        return (loss + terms["overshoot"] if "overshoot" in terms else loss), post, metrics

    def loss_terms(self, batch: dict[str, torch.Tensor], state: State | None = None
                   ) -> tuple[dict[str, torch.Tensor], State, dict[str, float | torch.Tensor]]:
        """World-model loss on a batch {'image' uint8 (B,T,H,W,3), 'action' (B,T,A), 'is_first' (B,T)},
        filtered from `state` (zeros if None).

        Terms: 'recon', 'kl' (already times kl_scale) and, with `cfg.overshoot_steps` > 1, 'overshoot' (the same),
        kept apart for diagnoses that split the gradient by term (benchmarks/representation_grads.py).
        Reconstruction is the Normal(mean, 1) negative log-likelihood without its constant, 0.5 * squared error
        summed over pixels, averaged over batch and time. With `cfg.augment` each sequence is shifted as a whole
        (input and target alike, so the dynamics see a consistent scene). Returns (terms, post, metrics); post keeps its graph (detach it
        for imagination starts) and also holds 'embed' (B, T, E), the encoder output it was filtered from, and
        'prior_feat' (B, T, F), the detached agent features of the one-step prior predictions of each frame.
        The metrics are floats, or 0-d tensors with `graph_safe`.
        """
        image = batch["image"]
        B, T = image.shape[:2]
        if self.cfg.augment:
            image = random_shift(image)  # one shift per sequence: the dynamics see a consistent scene
        embed = self.encoder(preprocess_image(image))
        post, prior = self.observe(embed, batch["action"], batch["is_first"], state)
        # The decoder's raw sub-pixel phases against the target moved into their layout: the sum over
        # pixels is the same, and the prediction is never interleaved (see `subpixel_layout`).
        pred = self.decoder(self.feat(post), subpixel=True)
        target = to_unit_range(subpixel_layout(image))
        if self.cfg.recon_focus_weight:
            scale = focus_scale(target, self.cfg.recon_focus, self.cfg.recon_focus_weight)
            pred, target = pred * scale, target * scale  # weights the squared error by scale^2
        recon = _HalfSquaredError.apply(pred, target) / (B * T)
        kl, kl_raw = self.kl_loss(post, prior)
        values = torch.stack([recon.detach(), kl.detach(), kl_raw, prior["disagreement"].mean(),
                              prior["std"].detach().mean(), post["std"].detach().mean()])
        keys = ("model/recon", "model/kl", "model/kl_raw", "model/disagreement", "model/prior_std",
                "model/post_std")
        metrics = dict(zip(keys, values.unbind() if self.graph_safe else values.tolist(), strict=True))
        metrics["model/recon_mse"] = 2.0 * metrics["model/recon"] / image[0, 0].numel()
        terms = {"recon": recon, "kl": self.cfg.kl_scale * kl}
        if self.cfg.overshoot_steps > 1:
            overshoot = self.overshoot_kl(post, prior, batch["action"], batch["is_first"])
            terms["overshoot"] = self.cfg.kl_scale * self.cfg.overshoot_weight * overshoot
            overshoot = overshoot.detach()
            metrics["model/overshoot"] = overshoot if self.graph_safe else float(overshoot)
        return terms, {**post, "embed": embed, "prior_feat": self.agent_feat(prior).detach()}, metrics

    def make_optimizer(self, capturable: bool = False) -> torch.optim.Optimizer:
        """Adam (lr, eps from cfg) with DreamerV2's decoupled weight decay w <- (1 - wd) w each step
        (`cmil.models.optim.decoupled_adam`); `capturable` for a CUDA-graph replay of the step."""
        self.optimizer = decoupled_adam(self.parameters(), self.cfg.lr, self.cfg.eps, self.cfg.weight_decay, capturable)
        return self.optimizer

    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[State, dict[str, float]]:
        """One update (loss, backward, clip, step). Returns the detached posterior and the metrics."""
        opt = self.optimizer if self.optimizer is not None else self.make_optimizer()
        loss, post, metrics = self.loss(batch)
        grad_norm = clipped_step(opt, loss, self.parameters(), self.cfg.grad_clip)
        metrics["model/loss"] = float(loss.detach())
        metrics["model/grad_norm"] = float(grad_norm)
        return {k: v.detach() for k, v in post.items()}, metrics

    # --- diagnostics --------------------------------------------------------------------------
    @torch.no_grad()
    def open_loop(self, batch: dict[str, torch.Tensor], context: int, sample: bool = True) -> torch.Tensor:
        """Observe the first `context` frames, then roll the prior forward on the recorded actions.

        Returns image means (B, T, 3, 64, 64) in the preprocessed space: posterior reconstructions for
        t < context and open-loop predictions for t >= context. An `is_first` after the context resets
        the state to zeros, as in filtering.
        """
        image, action, is_first = batch["image"], batch["action"], batch["is_first"]
        T = image.shape[1]
        if not 0 < context <= T:
            raise ValueError(f"context must be in [1, {T}], got {context}")
        post, _ = self.observe(self.encode(image[:, :context]), action[:, :context], is_first[:, :context],
                               sample=sample)
        state = {k: post[k][:, -1] for k in STATE_KEYS}
        feats = [self.feat(post)]
        for t in range(context, T):
            state, act = self._reset(state, action[:, t], is_first[:, t])
            state, _ = self.imagine_step(state, act, sample)
            feats.append(self.feat(state).unsqueeze(1))
        return self.decode(torch.cat(feats, 1))
