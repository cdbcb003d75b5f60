"""Building blocks shared by every method: MLPs, the conv image encoder, image preprocessing.

The MLPs and the conv encoder and decoder are the autocast regions of `cmil.precision`: in bf16 under
`use_precision("bf16")`, returning float32 either way."""

from __future__ import annotations

import torch
from torch import nn

from cmil.precision import autocast_region, fp32_on_cpu


class MLP(nn.Sequential):
    """An `nn.Sequential` (same parameters and state-dict keys) whose forward is an autocast region."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast_region(x):
            out = super().forward(x)
        return out.to(x.dtype)


def mlp(in_dim: int, out_dim: int, layers: int, units: int, act: type[nn.Module] = nn.ELU,
        norm: bool = False) -> MLP:
    """`layers` hidden layers of `units` (optionally LayerNorm) then a linear output."""
    mods: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers):
        mods.append(nn.Linear(dim, units))
        if norm:
            mods.append(nn.LayerNorm(units))
        mods.append(act())
        dim = units
    mods.append(nn.Linear(dim, out_dim))
    return MLP(*mods)


def to_unit_range(image: torch.Tensor) -> torch.Tensor:
    """uint8 pixel values -> float in [-0.5, 0.5] (any layout), as DreamerV2 feeds its encoder."""
    # One copy, then in place: each out-of-place step would allocate (and page-fault) a new image tensor.
    return image.to(torch.float32, copy=True).div_(255.0).sub_(0.5)


def preprocess_image(image: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-0.5, 0.5], as DreamerV2 feeds its encoder."""
    return to_unit_range(image.permute(*range(image.dim() - 3), -1, -3, -2))


def subpixel_layout(image: torch.Tensor) -> torch.Tensor:
    """Channels-last images (..., 2h, 2w, C) -> (..., h, w, 2, 2, C): pixel (2q + p_h, 2r + p_w) moved to
    [q, r, p_h, p_w], the layout `conv_transpose_subpixel(..., interleave=False)` computes in.

    A sum over pixels is the same in either layout, so a loss can compare the decoder's raw output
    with the target moved into its layout (one cheap copy of the target) instead of interleaving the
    output (two strided copies of the prediction: forward and backward)."""
    *lead, h2, w2, c = image.shape
    return image.reshape(*lead, h2 // 2, 2, w2 // 2, 2, c).transpose(-4, -3).contiguous()


class ConvEncoder(nn.Module):
    """DreamerV2 image encoder: 4 stride-2 convs (kernel 4, ELU), channels depth x (1, 2, 4, 8).

    Takes preprocessed images (..., 3, 64, 64) and returns flat embeddings (..., 32 * depth * ...).
    Leading batch/time dims are flattened for the convs and restored after. Runs channels-last,
    which is faster for convolutions on the CPU.
    """

    def __init__(self, depth: int = 48, image_size: int = 64, act: type[nn.Module] = nn.ELU):
        super().__init__()
        chans = [3, depth, 2 * depth, 4 * depth, 8 * depth]
        mods: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            mods += [nn.Conv2d(cin, cout, 4, stride=2), act()]
        self.net = nn.Sequential(*mods)
        size = image_size
        for _ in range(4):
            size = (size - 4) // 2 + 1
        self.out_dim = chans[-1] * size * size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_convs(self.net, x).to(x.dtype).reshape(*x.shape[:-3], self.out_dim)


def run_convs(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`net` on preprocessed images (..., 3, H, W) with the leading dims flattened, channels-last (faster for
    convolutions on the CPU), as an autocast region; returns its output for the flat batch."""
    with autocast_region(x):
        return net(x.reshape(-1, *x.shape[-3:]).contiguous(memory_format=torch.channels_last))


class SpatialSoftmax(nn.Module):
    """Feature maps (N, K, H, W) -> the expected image coordinates (N, 2K) in [-1, 1] of each map's softmax
    over its pixels (Levine et al. 2016's keypoints), with a learnt temperature: a head on them reads where
    things are rather than which pixels are lit."""

    def __init__(self, height: int, width: int):
        super().__init__()
        self.log_temperature = nn.Parameter(torch.zeros(()))
        ys, xs = torch.meshgrid(torch.linspace(-1.0, 1.0, height), torch.linspace(-1.0, 1.0, width), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.flatten(), ys.flatten()], -1), persistent=False)  # (HW, 2)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        n, k = maps.shape[:2]
        weights = torch.softmax(maps.reshape(n, k, -1) / self.log_temperature.exp(), -1)
        return (weights @ self.grid).reshape(n, 2 * k)


class KeypointEncoder(nn.Module):
    """Pixel BC's encoder option `bc.encoder='keypoints'`: two stride-2 convs (kernel 4) and one stride-1 conv
    (kernel 3) keep a 12x12 map of a 64x64 image, a 1x1 conv makes `keypoints` maps and `SpatialSoftmax`
    their coordinates: (..., 3, 64, 64) preprocessed -> (..., 2 * keypoints)."""

    def __init__(self, depth: int = 32, image_size: int = 64, keypoints: int = 32, act: type[nn.Module] = nn.ELU):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, depth, 4, stride=2), act(), nn.Conv2d(depth, 2 * depth, 4, stride=2),
                                 act(), nn.Conv2d(2 * depth, 4 * depth, 3), act(), nn.Conv2d(4 * depth, keypoints, 1))
        size = ((image_size - 4) // 2 + 1 - 4) // 2 + 1 - 2
        self.keypoints = SpatialSoftmax(size, size)
        self.out_dim = 2 * keypoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = run_convs(self.net, x).float()
        return self.keypoints(maps).to(x.dtype).reshape(*x.shape[:-3], self.out_dim)


def shift_indices(n: int, h: int, w: int, pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row (n, h) and column (n, w) indices of `n` random shifts in [-pad, pad], clamped to the image: indexing
    with them equals padding by replication and cropping back (without building the padded images)."""
    dx = torch.randint(0, 2 * pad + 1, (n,), device=device)
    dy = torch.randint(0, 2 * pad + 1, (n,), device=device)
    rows = (torch.arange(h, device=device)[None, :] + dy[:, None] - pad).clamp_(0, h - 1)
    cols = (torch.arange(w, device=device)[None, :] + dx[:, None] - pad).clamp_(0, w - 1)
    return rows, cols


def random_shift(image: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """DrQ-style augmentation on channels-last frames: (N, ..., H, W, C) -> the same, where everything under
    index n (one frame, or a whole sequence) moves by one random integer shift in [-pad, pad], edges replicated.

    Done as a row then a column selection of each item (contiguous runs), usually on the uint8 frames before
    `preprocess_image`: shifting moves pixels without changing them, so it commutes with the conversion, and
    it costs a third of padding and gathering float images."""
    n, (h, w) = image.shape[0], image.shape[-3:-1]
    rows, cols = shift_indices(n, h, w, pad, image.device)
    shifted = torch.empty_like(image)
    for i in range(n):
        torch.index_select(image[i].index_select(-3, rows[i]), -2, cols[i], out=shifted[i])
    return shifted


def conv_transpose_stem(x: torch.Tensor, layer: nn.ConvTranspose2d) -> torch.Tensor:
    """`layer` applied to a 1x1 input given flat, x (N, C_in) -> (N, C_out, k, k) channels-last.

    A transposed conv of a 1x1 image is a dense layer into k*k*C_out outputs; one matrix product is
    much faster on the CPU than oneDNN's deconvolution for this shape (and a (N, C, 1, 1) tensor does
    not carry a channels-last layout forward).
    """
    cin, cout, k, _ = layer.weight.shape
    y = x @ layer.weight.permute(0, 2, 3, 1).reshape(cin, k * k * cout)
    return (y.view(-1, k, k, cout) + layer.bias).permute(0, 3, 1, 2)


def conv_transpose_subpixel(x: torch.Tensor, layer: nn.ConvTranspose2d, interleave: bool = True) -> torch.Tensor:
    """A stride-2, padding-0 transposed conv computed as a conv with 4x the channels + pixel shuffle.

    Output pixel 2q + p (per axis, phase p in {0, 1}) sums x[q - j] * w[2j + p] over taps j < ceil(k/2),
    so each phase is an ordinary conv (kernel ceil(k/2), padding ceil(k/2) - 1, flipped taps); the four
    phases are interleaved into the channels-last output and odd kernels are cropped by one. Same result
    as `layer(x)` up to float rounding, and much faster on the CPU when C_out is small (oneDNN's
    deconvolution is slow for the decoder's last, 3-channel layer).

    `interleave=False` skips the interleave and returns the phases as (N, h, w, 2, 2, C_out), pixel
    (2q + p_h, 2r + p_w) at [q, r, p_h, p_w] (see `subpixel_layout`); only for even kernels (no crop).
    """
    w = layer.weight
    cin, cout, k, _ = w.shape
    if layer.stride != (2, 2) or layer.padding != (0, 0) or w.shape[-1] != k:
        raise ValueError("conv_transpose_subpixel supports square kernels, stride 2, padding 0")
    taps = (k + 1) // 2
    w = nn.functional.pad(w, (0, 2 * taps - k, 0, 2 * taps - k)).reshape(cin, cout, taps, 2, taps, 2)
    # Output channels ordered (phase_h, phase_w, c_out), so the interleave below moves c_out-sized runs.
    w = w.flip(2, 4).permute(3, 5, 1, 0, 2, 4).reshape(4 * cout, cin, taps, taps)
    y = nn.functional.conv2d(x, w, layer.bias.repeat(4), padding=taps - 1)
    n, _, h, wd = y.shape
    phases = y.permute(0, 2, 3, 1).reshape(n, h, wd, 2, 2, cout)  # a view of the channels-last memory
    if not interleave:
        if k % 2:
            raise ValueError("interleave=False needs an even kernel (odd ones crop the interleaved output)")
        return phases
    # A pixel shuffle done on the channels-last memory (nn.functional.pixel_shuffle is ~7x slower here).
    y = phases.transpose(2, 3).reshape(n, 2 * h, 2 * wd, cout)
    size = 2 * (x.shape[-1] - 1) + k
    return y[:, :size, :size].permute(0, 3, 1, 2)


class ConvDecoder(nn.Module):
    """DreamerV2 image decoder: dense to 32 * depth, then 4 stride-2 transposed convs (kernels 5, 5, 6, 6).

    Features (..., F) -> image means (..., 3, 64, 64) in the preprocessed space of `preprocess_image`
    (the likelihood is Normal(mean, 1)). The spatial sizes go 1 -> 5 -> 13 -> 30 -> 64, so only 64x64
    images are supported. The layers are plain `nn.ConvTranspose2d` modules (standard weights); the first
    and last are evaluated in equivalent faster forms (`conv_transpose_stem`, `conv_transpose_subpixel`),
    and activations run channels-last and in place.
    """

    def __init__(self, feat_dim: int, depth: int = 48, image_size: int = 64):
        super().__init__()
        if image_size != 64:
            raise ValueError(f"ConvDecoder produces 64x64 images, not {image_size}x{image_size}")
        self.linear = nn.Linear(feat_dim, 32 * depth)
        chans = [32 * depth, 4 * depth, 2 * depth, depth, 3]
        kernels = [5, 5, 6, 6]
        self.deconvs = nn.ModuleList(nn.ConvTranspose2d(cin, cout, k, stride=2)
                                     for cin, cout, k in zip(chans[:-1], chans[1:], kernels, strict=True))

    def forward(self, feat: torch.Tensor, subpixel: bool = False) -> torch.Tensor:
        """`subpixel=True` returns the last layer's phases (..., 32, 32, 2, 2, 3) uninterleaved (for a
        loss against a target in `subpixel_layout`); otherwise the images (..., 3, 64, 64)."""
        lead = feat.shape[:-1]
        first, *middle, last = self.deconvs
        with autocast_region(feat):
            x = self.linear(feat.reshape(-1, feat.shape[-1]))
            x = nn.functional.elu(conv_transpose_stem(x, first), inplace=True)
            for layer in middle:
                x = nn.functional.elu(layer(x.contiguous(memory_format=torch.channels_last)), inplace=True)
            # fp32 on the CPU under bf16: oneDNN's bf16 backward of this layer is slower than fp32's
            x = fp32_on_cpu(conv_transpose_subpixel, x, last, interleave=not subpixel)
        return x.to(feat.dtype).reshape(*lead, *x.shape[1:])


class EnsembleLinear(nn.Module):
    """K independent linear layers held as one batched weight (K, in, out).

    `forward` takes either one input shared by every member, (N, in) -> (K, N, out), computed as a
    single matrix product against all K weights at once, or a per-member input (K, N, in) -> (K, N, out)
    (one batched matmul). Each member is initialised like `nn.Linear` independently, so the members
    start different (their spread is the ensemble's disagreement).
    """

    def __init__(self, members: int, in_dim: int, out_dim: int):
        super().__init__()
        self.members, self.in_dim, self.out_dim = members, in_dim, out_dim
        bound = in_dim ** -0.5
        self.weight = nn.Parameter(torch.empty(members, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.members, -1, -1)
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"members={self.members}, in_dim={self.in_dim}, out_dim={self.out_dim}"


class LayerNormGRUCell(nn.Module):
    """DreamerV2's GRU cell: one dense layer on [input, state] -> LayerNorm -> reset/candidate/update gates.

    The update gate is biased by -1 (so the cell starts out keeping its state), the reset gate multiplies
    the candidate's pre-activation, and the new state is update * cand + (1 - update) * state.
    """

    def __init__(self, in_dim: int, size: int, update_bias: float = -1.0):
        super().__init__()
        self.size, self.update_bias = size, update_bias
        # No bias: the LayerNorm after it has its own.
        self.linear = nn.Linear(in_dim + size, 3 * size, bias=False)
        self.norm = nn.LayerNorm(3 * size)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        # Under autocast the dense layer runs in bf16; the LayerNorm, the gates and the new state stay
        # in the state's dtype, so rounding does not accumulate along the recurrence (and `lerp`, which
        # needs one dtype, gets one).
        parts = self.norm(self.linear(torch.cat([x, state], -1)).to(state.dtype))
        reset, cand, update = parts.chunk(3, -1)
        cand = torch.tanh(torch.sigmoid(reset) * cand)
        update = torch.sigmoid(update + self.update_bias)
        return torch.lerp(state, cand, update)


def gaussian_std(raw: torch.Tensor, min_std: float) -> torch.Tensor:
    """DreamerV2's 'sigmoid2' std: 2 * sigmoid(raw / 2) + min_std, in (min_std, 2 + min_std)."""
    return 2.0 * torch.sigmoid(raw / 2.0) + min_std


def diag_gaussian_kl(mean1: torch.Tensor, std1: torch.Tensor, mean2: torch.Tensor,
                     std2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, std1) || N(mean2, std2)) of diagonal Gaussians, summed over the last dim."""
    var_ratio = (std1 / std2).square()
    term = (mean1 - mean2).div(std2).square()
    return 0.5 * (var_ratio + term - 1.0 - var_ratio.log()).sum(-1)
