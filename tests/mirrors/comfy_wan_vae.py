"""Mirror of ComfyUI's causal video VAEs, for tests that cannot import ComfyUI.

Mirrors, attribute for attribute and call for call (our own code, written from reading them):
* ``comfy/ldm/wan/vae.py`` (Wan 2.1 and Qwen-Image): ``CausalConv3d``, ``RMS_norm``,
  ``Resample``, ``ResidualBlock``, ``AttentionBlock``, ``Encoder3d``, ``Decoder3d``, ``WanVAE``;
* ``comfy/ldm/wan/vae2_2.py`` (Wan 2.2): ``Resample`` (full-width upsample conv), ``AvgDown3D``,
  ``DupUp3D``, ``Down_ResidualBlock``, ``Up_ResidualBlock``, ``Encoder3d``, ``Decoder3d`` (with
  ``first_chunk``), ``WanVAE`` (patchify 2x2 outside the encoder/decoder);
of ComfyUI 0.3.64 (commit a125cd84). What matters for the tiler is reproduced exactly: the
``feat_cache`` protocol (``CACHE_T`` = 2 frames, the ``'Rep'`` marker of temporal upsampling, the
first-chunk store of temporal downsampling), the call signatures, and the module attribute names
the structural detectors read. ComfyUI's ``ops`` layers are plain ``nn`` layers here and the
attention is PyTorch's SDPA (what ComfyUI's ``vae_attention`` computes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CACHE_T = 2


def _roll_cache(x: torch.Tensor, previous: object) -> torch.Tensor:
    """This chunk's last CACHE_T frames, topped up with the previous chunk's last frame when short."""
    keep = x[:, :, -CACHE_T:].clone()
    if keep.shape[2] < CACHE_T and previous is not None:
        keep = torch.cat([previous[:, :, -1:].to(keep.device), keep], dim=2)
    return keep


def _frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def _batch_to_frames(x: torch.Tensor, t: int) -> torch.Tensor:
    bt, c, h, w = x.shape
    return x.reshape(bt // t, t, c, h, w).permute(0, 2, 1, 3, 4)


class CausalConv3d(nn.Conv3d):
    """Mirror of ``comfy.ldm.wan.vae.CausalConv3d``: pads itself, causally in time (front only)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        pt, ph, pw = self.padding
        self._padding = (pw, pw, ph, ph, 2 * pt, 0)
        self.padding = (0, 0, 0)

    def forward(self, x, cache_x=None, cache_list=None, cache_idx=None):
        if cache_list is not None:
            cache_x = cache_list[cache_idx]
            cache_list[cache_idx] = None
        pad = list(self._padding)
        if cache_x is not None and pad[4] > 0:
            x = torch.cat([cache_x.to(x.device), x], dim=2)
            pad[4] -= cache_x.shape[2]
        return super().forward(F.pad(x, pad))


class RMS_norm(nn.Module):  # noqa: N801 - ComfyUI's name
    """Mirror of ``RMS_norm``: L2-normalise over channels, times sqrt(dim) and a learned gain."""

    def __init__(self, dim, channel_first=True, images=True, bias=False):
        super().__init__()
        tail = (1, 1) if images else (1, 1, 1)
        shape = (dim, *tail) if channel_first else (dim,)
        self.channel_first = channel_first
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape)) if bias else None

    def forward(self, x):
        y = F.normalize(x, dim=1 if self.channel_first else -1) * self.scale * self.gamma.to(x)
        return y + (self.bias.to(x) if self.bias is not None else 0)


class Resample(nn.Module):
    """Mirror of Wan 2.1 ``Resample`` (``up_conv_out`` = dim // 2); Wan 2.2 passes full width."""

    _half_width_upsample = True

    def __init__(self, dim, mode):
        super().__init__()
        self.dim = dim
        self.mode = mode
        up_out = dim // 2 if self._half_width_upsample else dim
        if mode in ("upsample2d", "upsample3d"):
            self.resample = nn.Sequential(
                nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"), nn.Conv2d(dim, up_out, 3, padding=1)
            )
            if mode == "upsample3d":
                self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode in ("downsample2d", "downsample3d"):
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=(2, 2)))
            if mode == "downsample3d":
                self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(0, 0, 0))
        else:
            self.resample = nn.Identity()

    def _time_upsample(self, x, feat_cache, feat_idx):
        idx = feat_idx[0]
        feat_idx[0] += 1
        held = feat_cache[idx]
        if held is None:  # first chunk: no temporal doubling, remember that with the marker
            feat_cache[idx] = "Rep"
            return x
        keep = x[:, :, -CACHE_T:].clone()
        if keep.shape[2] < 2:
            first = held[:, :, -1:].to(keep.device) if not isinstance(held, str) else torch.zeros_like(keep)
            keep = torch.cat([first, keep], dim=2)
        y = self.time_conv(x) if isinstance(held, str) else self.time_conv(x, held)
        feat_cache[idx] = keep
        b, c, t, h, w = x.shape
        y = y.reshape(b, 2, c, t, h, w)
        return torch.stack((y[:, 0], y[:, 1]), 3).reshape(b, c, t * 2, h, w)

    def _time_downsample(self, x, feat_cache, feat_idx):
        idx = feat_idx[0]
        feat_idx[0] += 1
        held = feat_cache[idx]
        if held is None:  # first chunk: keep it, no temporal reduction
            feat_cache[idx] = x.clone()
            return x
        keep = x[:, :, -1:].clone()
        y = self.time_conv(torch.cat([held[:, :, -1:], x], 2))
        feat_cache[idx] = keep
        return y

    def forward(self, x, feat_cache=None, feat_idx=[0]):  # noqa: B006 - ComfyUI's signature
        if self.mode == "upsample3d" and feat_cache is not None:
            x = self._time_upsample(x, feat_cache, feat_idx)
        t = x.shape[2]
        x = _batch_to_frames(self.resample(_frames_to_batch(x)), t)
        if self.mode == "downsample3d" and feat_cache is not None:
            x = self._time_downsample(x, feat_cache, feat_idx)
        return x


class ResidualBlock(nn.Module):
    """Mirror of ``ResidualBlock``: ``residual`` = norm, SiLU, conv, norm, SiLU, dropout, conv."""

    def __init__(self, in_dim, out_dim, dropout=0.0):
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.residual = nn.Sequential(
            RMS_norm(in_dim, images=False),
            nn.SiLU(),
            CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMS_norm(out_dim, images=False),
            nn.SiLU(),
            nn.Dropout(dropout),
            CausalConv3d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x, feat_cache=None, feat_idx=[0]):  # noqa: B006 - ComfyUI's signature
        skip = self.shortcut(x)
        for layer in self.residual:
            if isinstance(layer, CausalConv3d) and feat_cache is not None:
                idx = feat_idx[0]
                keep = _roll_cache(x, feat_cache[idx])
                x = layer(x, cache_list=feat_cache, cache_idx=idx)
                feat_cache[idx] = keep
                feat_idx[0] += 1
            else:
                x = layer(x)
        return x + skip


class AttentionBlock(nn.Module):
    """Mirror of ``AttentionBlock``: single-head self-attention over each frame's pixels."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim
        self.norm = RMS_norm(dim)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        t = x.shape[2]
        y = self.norm(_frames_to_batch(x))
        q, k, v = self.to_qkv(y).chunk(3, dim=1)
        bt, c, h, w = q.shape
        q, k, v = (a.reshape(bt, 1, c, h * w).transpose(-1, -2) for a in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(bt, c, h, w)
        return _batch_to_frames(self.proj(y), t) + x


def _cached_conv(conv, x, feat_cache, feat_idx):
    """How Encoder3d/Decoder3d run ``conv1`` and the head's conv with the cache."""
    if feat_cache is None:
        return conv(x)
    idx = feat_idx[0]
    keep = _roll_cache(x, feat_cache[idx])
    x = conv(x, feat_cache[idx])
    feat_cache[idx] = keep
    feat_idx[0] += 1
    return x


def _run_middle(middle, x, feat_cache, feat_idx):
    for layer in middle:
        x = layer(x, feat_cache, feat_idx) if isinstance(layer, ResidualBlock) and feat_cache is not None else layer(x)
    return x


def _run_head(head, x, feat_cache, feat_idx):
    for layer in head:
        x = _cached_conv(layer, x, feat_cache, feat_idx) if isinstance(layer, CausalConv3d) else layer(x)
    return x


def _head(dim, out):
    return nn.Sequential(RMS_norm(dim, images=False), nn.SiLU(), CausalConv3d(dim, out, 3, padding=1))


def _middle(dim, dropout):
    return nn.Sequential(ResidualBlock(dim, dim, dropout), AttentionBlock(dim), ResidualBlock(dim, dim, dropout))


class Encoder3d(nn.Module):
    """Mirror of Wan 2.1 ``Encoder3d``."""

    def __init__(
        self,
        dim=128,
        z_dim=4,
        dim_mult=(1, 2, 4, 4),
        num_res_blocks=2,
        attn_scales=(),
        temperal_downsample=(True, True, False),
        dropout=0.0,
    ):
        super().__init__()
        self.dim, self.z_dim, self.dim_mult = dim, z_dim, list(dim_mult)
        self.num_res_blocks, self.attn_scales = num_res_blocks, list(attn_scales)
        self.temperal_downsample = list(temperal_downsample)
        dims = [dim * u for u in [1, *dim_mult]]
        scale = 1.0
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        layers = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            for _ in range(num_res_blocks):
                layers.append(ResidualBlock(in_dim, out_dim, dropout))
                if scale in attn_scales:
                    layers.append(AttentionBlock(out_dim))
                in_dim = out_dim
            if i != len(dim_mult) - 1:
                layers.append(Resample(out_dim, "downsample3d" if temperal_downsample[i] else "downsample2d"))
                scale /= 2.0
        self.downsamples = nn.Sequential(*layers)
        self.middle = _middle(out_dim, dropout)
        self.head = _head(out_dim, z_dim)

    def forward(self, x, feat_cache=None, feat_idx=[0]):  # noqa: B006 - ComfyUI's signature
        x = _cached_conv(self.conv1, x, feat_cache, feat_idx)
        for layer in self.downsamples:
            x = layer(x, feat_cache, feat_idx) if feat_cache is not None else layer(x)
        x = _run_middle(self.middle, x, feat_cache, feat_idx)
        return _run_head(self.head, x, feat_cache, feat_idx)


class Decoder3d(nn.Module):
    """Mirror of Wan 2.1 ``Decoder3d`` (levels after the first take half the previous width in)."""

    def __init__(
        self,
        dim=128,
        z_dim=4,
        dim_mult=(1, 2, 4, 4),
        num_res_blocks=2,
        attn_scales=(),
        temperal_upsample=(False, True, True),
        dropout=0.0,
    ):
        super().__init__()
        self.dim, self.z_dim, self.dim_mult = dim, z_dim, list(dim_mult)
        self.num_res_blocks, self.attn_scales = num_res_blocks, list(attn_scales)
        self.temperal_upsample = list(temperal_upsample)
        dims = [dim * u for u in [dim_mult[-1], *dim_mult[::-1]]]
        scale = 1.0 / 2 ** (len(dim_mult) - 2)
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.middle = _middle(dims[0], dropout)
        layers = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            if i in (1, 2, 3):
                in_dim = in_dim // 2
            for _ in range(num_res_blocks + 1):
                layers.append(ResidualBlock(in_dim, out_dim, dropout))
                if scale in attn_scales:
                    layers.append(AttentionBlock(out_dim))
                in_dim = out_dim
            if i != len(dim_mult) - 1:
                layers.append(Resample(out_dim, "upsample3d" if temperal_upsample[i] else "upsample2d"))
                scale *= 2.0
        self.upsamples = nn.Sequential(*layers)
        self.head = _head(out_dim, 3)

    def forward(self, x, feat_cache=None, feat_idx=[0]):  # noqa: B006 - ComfyUI's signature
        x = _cached_conv(self.conv1, x, feat_cache, feat_idx)
        x = _run_middle(self.middle, x, feat_cache, feat_idx)
        for layer in self.upsamples:
            x = layer(x, feat_cache, feat_idx) if feat_cache is not None else layer(x)
        return _run_head(self.head, x, feat_cache, feat_idx)


def count_conv3d(model):
    return sum(1 for m in model.modules() if isinstance(m, CausalConv3d))


class WanVAE(nn.Module):
    """Mirror of Wan 2.1 ``WanVAE``: decode one latent frame per decoder call, encode 1, 4, 4, ... frames."""

    def __init__(
        self,
        dim=128,
        z_dim=4,
        dim_mult=(1, 2, 4, 4),
        num_res_blocks=2,
        attn_scales=(),
        temperal_downsample=(True, True, False),
        dropout=0.0,
    ):
        super().__init__()
        self.dim, self.z_dim = dim, z_dim
        self.temperal_downsample = list(temperal_downsample)
        self.temperal_upsample = list(temperal_downsample)[::-1]
        self.encoder = Encoder3d(
            dim, z_dim * 2, dim_mult, num_res_blocks, attn_scales, self.temperal_downsample, dropout
        )
        self.conv1 = CausalConv3d(z_dim * 2, z_dim * 2, 1)
        self.conv2 = CausalConv3d(z_dim, z_dim, 1)
        self.decoder = Decoder3d(dim, z_dim, dim_mult, num_res_blocks, attn_scales, self.temperal_upsample, dropout)

    def encode(self, x):
        feat_map = [None] * count_conv3d(self.decoder)
        chunks = [x[:, :, :1]] + [x[:, :, 1 + 4 * i : 5 + 4 * i] for i in range((x.shape[2] - 1) // 4)]
        out = torch.cat([self.encoder(c, feat_cache=feat_map, feat_idx=[0]) for c in chunks], 2)
        mu, _ = self.conv1(out).chunk(2, dim=1)
        return mu

    def decode(self, z):
        feat_map = [None] * count_conv3d(self.decoder)
        x = self.conv2(z)
        frames = [self.decoder(x[:, :, i : i + 1], feat_cache=feat_map, feat_idx=[0]) for i in range(z.shape[2])]
        return torch.cat(frames, 2)


# --- Wan 2.2 (vae2_2.py) ------------------------------------------------------------------------


class Resample22(Resample):
    """Mirror of Wan 2.2 ``Resample``: the upsample conv keeps the full width."""

    _half_width_upsample = False


def patchify(x, patch_size):
    """Mirror of vae2_2 ``patchify`` for 5D input: (c, r, q) channel order."""
    if patch_size == 1:
        return x
    b, c, f, h, w = x.shape
    p = patch_size
    x = x.reshape(b, c, f, h // p, p, w // p, p)  # b c f h q w r
    return x.permute(0, 1, 6, 4, 2, 3, 5).reshape(b, c * p * p, f, h // p, w // p)


def unpatchify(x, patch_size):
    """Mirror of vae2_2 ``unpatchify`` for 5D input."""
    if patch_size == 1:
        return x
    b, crq, f, h, w = x.shape
    p = patch_size
    x = x.reshape(b, crq // (p * p), p, p, f, h, w)  # b c r q f h w
    return x.permute(0, 1, 4, 5, 3, 6, 2).reshape(b, crq // (p * p), f, h * p, w * p)


class AvgDown3D(nn.Module):
    """Mirror of ``AvgDown3D``: space/time-to-channel shuffle, then the mean of channel groups."""

    def __init__(self, in_channels, out_channels, factor_t, factor_s=1):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.factor_t, self.factor_s = factor_t, factor_s
        self.factor = factor_t * factor_s * factor_s
        self.group_size = in_channels * self.factor // out_channels

    def forward(self, x):
        ft, fs = self.factor_t, self.factor_s
        x = F.pad(x, (0, 0, 0, 0, (ft - x.shape[2] % ft) % ft, 0))
        b, c, t, h, w = x.shape
        x = x.reshape(b, c, t // ft, ft, h // fs, fs, w // fs, fs).permute(0, 1, 3, 5, 7, 2, 4, 6)
        x = x.reshape(b, self.out_channels, self.group_size, t // ft, h // fs, w // fs)
        return x.mean(dim=2)


class DupUp3D(nn.Module):
    """Mirror of ``DupUp3D``: channel-to-space/time shuffle of repeated channels; drops the leading
    frames of the first chunk."""

    def __init__(self, in_channels, out_channels, factor_t, factor_s=1):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.factor_t, self.factor_s = factor_t, factor_s
        self.factor = factor_t * factor_s * factor_s
        self.repeats = out_channels * self.factor // in_channels

    def forward(self, x, first_chunk=False):
        ft, fs = self.factor_t, self.factor_s
        x = x.repeat_interleave(self.repeats, dim=1)
        b, _, t, h, w = x.shape
        x = x.reshape(b, self.out_channels, ft, fs, fs, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        x = x.reshape(b, self.out_channels, t * ft, h * fs, w * fs)
        return x[:, :, ft - 1 :] if first_chunk else x


class Down_ResidualBlock(nn.Module):  # noqa: N801 - ComfyUI's name
    """Mirror of ``Down_ResidualBlock``: residual blocks (+ downsample) plus an average shortcut."""

    def __init__(self, in_dim, out_dim, dropout, mult, temperal_downsample=False, down_flag=False):
        super().__init__()
        self.avg_shortcut = AvgDown3D(
            in_dim, out_dim, factor_t=2 if temperal_downsample else 1, factor_s=2 if down_flag else 1
        )
        layers = []
        for _ in range(mult):
            layers.append(ResidualBlock(in_dim, out_dim, dropout))
            in_dim = out_dim
        if down_flag:
            layers.append(Resample22(out_dim, "downsample3d" if temperal_downsample else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)

    def forward(self, x, feat_cache=None, feat_idx=[0]):  # noqa: B006 - ComfyUI's signature
        y = x
        for module in self.downsamples:
            y = module(y, feat_cache, feat_idx)
        return y + self.avg_shortcut(x)


class Up_ResidualBlock(nn.Module):  # noqa: N801 - ComfyUI's name
    """Mirror of ``Up_ResidualBlock``: residual blocks (+ upsample) plus a duplicating shortcut."""

    def __init__(self, in_dim, out_dim, dropout, mult, temperal_upsample=False, up_flag=False):
        super().__init__()
        self.avg_shortcut = (
            DupUp3D(in_dim, out_dim, factor_t=2 if temperal_upsample else 1, factor_s=2) if up_flag else None
        )
        layers = []
        for _ in range(mult):
            layers.append(ResidualBlock(in_dim, out_dim, dropout))
            in_dim = out_dim
        if up_flag:
            layers.append(Resample22(out_dim, "upsample3d" if temperal_upsample else "upsample2d"))
        self.upsamples = nn.Sequential(*layers)

    def forward(self, x, feat_cache=None, feat_idx=[0], first_chunk=False):  # noqa: B006 - ComfyUI's signature
        y = x
        for module in self.upsamples:
            y = module(y, feat_cache, feat_idx)
        if self.avg_shortcut is None:
            return y
        return y + self.avg_shortcut(x, first_chunk)


class Encoder3d22(nn.Module):
    """Mirror of Wan 2.2 ``Encoder3d`` (12 input channels: 2x2-patchified RGB)."""

    def __init__(
        self,
        dim=128,
        z_dim=4,
        dim_mult=(1, 2, 4, 4),
        num_res_blocks=2,
        attn_scales=(),
        temperal_downsample=(True, True, False),
        dropout=0.0,
    ):
        super().__init__()
        self.dim, self.z_dim, self.dim_mult = dim, z_dim, list(dim_mult)
        self.num_res_blocks, self.attn_scales = num_res_blocks, list(attn_scales)
        self.temperal_downsample = list(temperal_downsample)
        dims = [dim * u for u in [1, *dim_mult]]
        self.conv1 = CausalConv3d(12, dims[0], 3, padding=1)
        blocks = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            t_down = temperal_downsample[i] if i < len(temperal_downsample) else False
            blocks.append(
                Down_ResidualBlock(in_dim, out_dim, dropout, num_res_blocks, t_down, down_flag=i != len(dim_mult) - 1)
            )
        self.downsamples = nn.Sequential(*blocks)
        self.middle = _middle(out_dim, dropout)
        self.head = _head(out_dim, z_dim)

    def forward(self, x, feat_cache=None, feat_idx=[0]):  # noqa: B006 - ComfyUI's signature
        x = _cached_conv(self.conv1, x, feat_cache, feat_idx)
        for layer in self.downsamples:
            x = layer(x, feat_cache, feat_idx) if feat_cache is not None else layer(x)
        x = _run_middle(self.middle, x, feat_cache, feat_idx)
        return _run_head(self.head, x, feat_cache, feat_idx)


class Decoder3d22(nn.Module):
    """Mirror of Wan 2.2 ``Decoder3d`` (12 output channels; takes ``first_chunk``)."""

    def __init__(
        self,
        dim=128,
        z_dim=4,
        dim_mult=(1, 2, 4, 4),
        num_res_blocks=2,
        attn_scales=(),
        temperal_upsample=(False, True, True),
        dropout=0.0,
    ):
        super().__init__()
        self.dim, self.z_dim, self.dim_mult = dim, z_dim, list(dim_mult)
        self.num_res_blocks, self.attn_scales = num_res_blocks, list(attn_scales)
        self.temperal_upsample = list(temperal_upsample)
        dims = [dim * u for u in [dim_mult[-1], *dim_mult[::-1]]]
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.middle = _middle(dims[0], dropout)
        blocks = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            t_up = temperal_upsample[i] if i < len(temperal_upsample) else False
            blocks.append(
                Up_ResidualBlock(in_dim, out_dim, dropout, num_res_blocks + 1, t_up, up_flag=i != len(dim_mult) - 1)
            )
        self.upsamples = nn.Sequential(*blocks)
        self.head = _head(out_dim, 12)

    def forward(self, x, feat_cache=None, feat_idx=[0], first_chunk=False):  # noqa: B006 - ComfyUI's signature
        x = _cached_conv(self.conv1, x, feat_cache, feat_idx)
        x = _run_middle(self.middle, x, feat_cache, feat_idx)
        for layer in self.upsamples:
            x = layer(x, feat_cache, feat_idx, first_chunk) if feat_cache is not None else layer(x)
        return _run_head(self.head, x, feat_cache, feat_idx)


class WanVAE22(nn.Module):
    """Mirror of Wan 2.2 ``WanVAE``: patchify 2x2 around the encoder/decoder; fresh caches per call."""

    def __init__(
        self,
        dim=160,
        dec_dim=256,
        z_dim=16,
        dim_mult=(1, 2, 4, 4),
        num_res_blocks=2,
        attn_scales=(),
        temperal_downsample=(True, True, False),
        dropout=0.0,
    ):
        super().__init__()
        self.z_dim = z_dim
        self.temperal_downsample = list(temperal_downsample)
        self.temperal_upsample = list(temperal_downsample)[::-1]
        self.encoder = Encoder3d22(
            dim, z_dim * 2, dim_mult, num_res_blocks, attn_scales, self.temperal_downsample, dropout
        )
        self.conv1 = CausalConv3d(z_dim * 2, z_dim * 2, 1)
        self.conv2 = CausalConv3d(z_dim, z_dim, 1)
        self.decoder = Decoder3d22(
            dec_dim, z_dim, dim_mult, num_res_blocks, attn_scales, self.temperal_upsample, dropout
        )

    def encode(self, x):
        x = patchify(x, 2)
        feat_map = [None] * count_conv3d(self.encoder)
        chunks = [x[:, :, :1]] + [x[:, :, 1 + 4 * i : 5 + 4 * i] for i in range((x.shape[2] - 1) // 4)]
        out = torch.cat([self.encoder(c, feat_cache=feat_map, feat_idx=[0]) for c in chunks], 2)
        mu, _ = self.conv1(out).chunk(2, dim=1)
        return mu

    def decode(self, z):
        feat_map = [None] * count_conv3d(self.decoder)
        x = self.conv2(z)
        frames = []
        for i in range(z.shape[2]):
            extra = {"first_chunk": True} if i == 0 else {}
            frames.append(self.decoder(x[:, :, i : i + 1], feat_cache=feat_map, feat_idx=[0], **extra))
        return unpatchify(torch.cat(frames, 2), 2)
