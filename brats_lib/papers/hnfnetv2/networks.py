"""The HNF-Net family of Jia et al.: HNF-Net (BraTS 2019/2020) and HNF-Netv2 (BraTS 2021,
"HNF-Netv2 for Brain Tumor Segmentation using multi-modal MR Imaging"), with the 3D U-Net
baseline of its ablation (Table 1). Read beside Sections 3.1-3.2 of the v2 paper.

===================  ==========================================================  =========
name                 Table 1 row                                                 paper
===================  ==========================================================  =========
``hnf_unet3d``       3D U-Net (Cicek et al.) baseline                            15.80M
``hnfnet``           HNF-Net: PMF modules + EMA attention                        16.85M
``hnfnet_intra``     HNF-Net + intra-scale SDE blocks                            17.31M
``hnfnetv2``         HNF-Net + intra- and inter-scale SDE blocks (HNF-Netv2)     17.91M
===================  ==========================================================  =========

Layout (Fig. 2; widths as ``notebooks/papers.md`` reconstructs them from the
parameter counts, ``width`` = c = 32 in the paper)::

    scale r      encoder: conv(4 -> c), conv(c -> c)  ---------------------------(+)--> conv(c -> c) -> 1x1 head
                     | stride-2 conv                                                ^
    scale r/2    PMF1 [c] -> PMF2 [c, 2c] -> PMF3 [c, 2c, 4c] -(inter-SDE)-> PMF4 [c, 2c, 4c, 8c]
                     branches at r/2, r/4, r/8, r/16; a new branch = stride-2 conv from the lowest
                                                                        |
                     the four outputs up-sampled to r/2, concatenated (15c) -> EMA -> 1x1 conv (c)
                     -> trilinear up-sampling to r, added to the encoder feature

* :class:`PMFModule` - parallel multi-scale fusion: every branch runs ``blocks`` residual
  basic blocks at its own scale, then fully connected fusion (HRNet, Wang et al. 2020):
  output i = ReLU(sum_j f_ij(x_j)), f_ii = identity, f_ij (j > i) = 1x1x1 conv + trilinear
  up-sampling, f_ij (j < i) = i - j chained stride-2 3x3x3 convs.
* :class:`EMAUnit` - expectation-maximisation attention (Li et al., ICCV 2019), K bases.
* :class:`IntraSDE` - intra-scale semantic discrimination enhancing (Fig. 4a text):
  GAP, two 1x1x1 convs, the result re-weights the branch features (inside each residual block).
* :class:`InterSDE` - inter-scale SDE (between PMF3 and PMF4): GAP of the smallest-scale
  branch, up-sampled to every branch, 1x1x1 conv to one channel, concatenated, 3x3x3 conv.

Every conv is followed by InstanceNorm (affine) and, where the text implies an
activation, ReLU. Shapes: input (B, 4, X, Y, Z) with X, Y, Z divisible by 16; output
(B, out_channels, X, Y, Z) logits (WT, TC, ET for the paper's region-based loss).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from brats_lib.models import register
from brats_lib.models.unet3d import UNet3D


def conv_norm(cin: int, cout: int, kernel: int = 3, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """conv (no bias: a norm follows) - InstanceNorm (affine) [- ReLU]."""
    layers: list[nn.Module] = [nn.Conv3d(cin, cout, kernel, stride, padding=kernel // 2, bias=False),
                               nn.InstanceNorm3d(cout, affine=True)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def upsample_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Trilinear interpolation of ``x`` to the spatial size of ``like``."""
    return F.interpolate(x, size=like.shape[2:], mode="trilinear", align_corners=False)


# ------------------------------------------------------------------ SDE blocks (Section 3.2)
class IntraSDE(nn.Module):
    """Intra-scale SDE: ``x * sigmoid(conv2(ReLU(conv1(GAP(x)))))``, convs 1x1x1 w -> w -> w.

    The global feature "gathers information from all spatial positions" and re-weights
    the high-resolution features channel by channel. (B, w, X, Y, Z) -> same shape.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 1)
        self.conv2 = nn.Conv3d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = F.adaptive_avg_pool3d(x, 1)
        return x * torch.sigmoid(self.conv2(F.relu(self.conv1(g))))


class InterSDE(nn.Module):
    """Inter-scale SDE over the branches of one PMF module (Fig. 4b text).

    g = GAP(x_n) of the smallest-scale branch n; for each branch i: g up-sampled to x_i's
    size, a 1x1x1 conv to one channel, concatenated to x_i, then a 3x3x3 conv (w_i + 1 -> w_i)
    - norm - ReLU. Up-sampling a 1^3 map is a broadcast. Input and output: a list of
    (B, w_i, X_i, Y_i, Z_i).
    """

    def __init__(self, widths: Sequence[int]):
        super().__init__()
        self.reduce = nn.ModuleList(nn.Conv3d(widths[-1], 1, 1) for _ in widths)
        self.fuse = nn.ModuleList(conv_norm(w + 1, w) for w in widths)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        g = F.adaptive_avg_pool3d(xs[-1], 1)
        out = []
        for x, reduce, fuse in zip(xs, self.reduce, self.fuse):
            m = reduce(g.expand(-1, -1, *x.shape[2:]))
            out.append(fuse(torch.cat([x, m], dim=1)))
        return out


# ------------------------------------------------------------------ PMF module (Section 3.1)
class BasicBlock(nn.Module):
    """Residual basic block: conv-norm-ReLU-conv-norm [-intra-SDE] + identity, ReLU."""

    def __init__(self, channels: int, intra_sde: bool = False):
        super().__init__()
        self.body = nn.Sequential(conv_norm(channels, channels), conv_norm(channels, channels, relu=False))
        self.sde = IntraSDE(channels) if intra_sde else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.sde(self.body(x)))


class PMFModule(nn.Module):
    """Parallel multi-scale fusion over ``len(widths)`` branches (branch i at 1/2^i of the first).

    Input and output: a list of (B, widths[i], X / 2^i, Y / 2^i, Z / 2^i).
    """

    def __init__(self, widths: Sequence[int], blocks: int = 2, intra_sde: bool = False):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(w, intra_sde) for _ in range(blocks)]) for w in widths)
        n = len(widths)
        self.fuse = nn.ModuleList()
        for i in range(n):
            row = nn.ModuleList()
            for j in range(n):
                if j == i:
                    row.append(nn.Identity())
                elif j > i:  # up: 1x1x1 conv to w_i (then trilinear in forward)
                    row.append(conv_norm(widths[j], widths[i], kernel=1, relu=False))
                else:        # down: i - j stride-2 convs, the last one to w_i without ReLU
                    steps = [conv_norm(widths[j], widths[j], stride=2) for _ in range(i - j - 1)]
                    steps.append(conv_norm(widths[j], widths[i], stride=2, relu=False))
                    row.append(nn.Sequential(*steps))
            self.fuse.append(row)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if len(xs) == 1:
            return xs
        out = []
        for i, row in enumerate(self.fuse):
            y = xs[i]
            for j, f in enumerate(row):
                if j != i:
                    z = f(xs[j])
                    y = y + (upsample_to(z, xs[i]) if j > i else z)
            out.append(F.relu(y))
        return out


# ------------------------------------------------------------------ EMA (Li et al. 2019)
class EMAUnit(nn.Module):
    """Expectation-maximisation attention unit, as the public EMANet code.

    With x = conv1x1(input) flattened to (B, C, N) and bases mu (B, C, K), repeated T times
    without gradient::

        E-step   z  = softmax_K(x^T mu)                 (B, N, K)
        M-step   mu = x (z / sum_N z),  mu /= ||mu||_C   (B, C, K)

    then x~ = mu z^T, and the output is ReLU(input + norm(conv1x1(ReLU(x~)))). While
    training, the stored bases follow the batch-mean final bases with ``momentum``
    (mu <- momentum mu + (1 - momentum) mean_B mu). As in EMANet, the reconstruction is
    built from the gradient-free E/M results, so ``conv_in`` receives no gradient
    (the optimiser skips it: its ``grad`` stays ``None``). (B, C, X, Y, Z) -> same shape.
    """

    def __init__(self, channels: int, bases: int = 256, iterations: int = 3, momentum: float = 0.9):
        super().__init__()
        self.iterations, self.momentum = int(iterations), float(momentum)
        mu = torch.randn(1, channels, bases) * math.sqrt(2.0 / bases)
        self.register_buffer("mu", F.normalize(mu, dim=1))
        self.conv_in = nn.Conv3d(channels, channels, 1)
        self.conv_out = conv_norm(channels, channels, kernel=1, relu=False)
        self.last_attention: torch.Tensor | None = None  # z of the last forward (B, N, K), for figures
        self.keep_attention = False

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        # the EM iterations in float32 even under autocast: in bfloat16 the normalised bases
        # degenerate within a few steps and the loss becomes NaN (measured on CPU)
        if inp.device.type not in ("cpu", "cuda"):  # e.g. the meta device of size read-outs
            return self._forward(inp)
        with torch.autocast(device_type=inp.device.type, enabled=False):
            return self._forward(inp.float())

    def _forward(self, inp: torch.Tensor) -> torch.Tensor:
        b, c = inp.shape[:2]
        x = self.conv_in(inp).flatten(2)                           # (B, C, N)
        mu = self.mu.expand(b, -1, -1)                             # (B, C, K)
        with torch.no_grad():
            for _ in range(self.iterations):
                z = torch.softmax(torch.bmm(x.transpose(1, 2), mu), dim=2)     # E-step (B, N, K)
                z_ = z / (1e-6 + z.sum(dim=1, keepdim=True))
                mu = F.normalize(torch.bmm(x, z_), dim=1)                        # M-step (B, C, K)
        recon = torch.bmm(mu, z.transpose(1, 2)).view_as(inp)     # (B, C, X, Y, Z)
        if self.training:
            with torch.no_grad():
                self.mu.mul_(self.momentum).add_(mu.mean(dim=0, keepdim=True), alpha=1 - self.momentum)
        if self.keep_attention:
            self.last_attention = z.detach()
        return F.relu(inp + self.conv_out(F.relu(recon)))


# ------------------------------------------------------------------ the network
class HNFNet(nn.Module):
    """HNF-Net / HNF-Netv2.

    Args:
        in_channels: 4 MR sequences.
        out_channels: 3 region logits (WT, TC, ET).
        width: channels c at scale r and of the first PMF branch (paper 32); branch i has c 2^i.
        pmf_modules: cascaded PMF modules; module m has m branches (paper 4).
        blocks: residual basic blocks per branch per module (paper 2).
        bases: K, the EMA bases (paper 256); iterations: EM steps T (EMANet 3).
        intra_sde: intra-scale SDE inside every residual block.
        inter_sde: inter-scale SDE between the last two PMF modules.
        decoder_blocks: 3x3x3 conv blocks at scale r after the addition, before the 1x1x1
            prediction conv (1: the reading that matches the paper's FLOPs; 2 reads "two
            blocks for decoding" as two 3x3x3 blocks, +58 GMACs at 128^3).
    """

    def __init__(self, in_channels: int = 4, out_channels: int = 3, width: int = 32, pmf_modules: int = 4,
                 blocks: int = 2, bases: int = 256, iterations: int = 3, intra_sde: bool = False,
                 inter_sde: bool = False, decoder_blocks: int = 1):
        super().__init__()
        if pmf_modules < 2 and inter_sde:
            raise ValueError("the inter-scale SDE block sits between two PMF modules: pmf_modules must be >= 2")
        widths = [width * 2 ** i for i in range(pmf_modules)]
        self.widths, self.divisor = widths, 2 ** pmf_modules
        self.encoder = nn.Sequential(conv_norm(in_channels, width), conv_norm(width, width))
        self.down = conv_norm(width, width, stride=2)
        self.pmf = nn.ModuleList(PMFModule(widths[: m + 1], blocks, intra_sde) for m in range(pmf_modules))
        # a new branch after module m: stride-2 conv from its lowest branch
        self.transitions = nn.ModuleList(conv_norm(widths[m], widths[m + 1], stride=2) for m in range(pmf_modules - 1))
        self.inter_sde = InterSDE(widths[:-1]) if inter_sde else None
        self.ema = EMAUnit(sum(widths), bases, iterations)
        self.reduce = conv_norm(sum(widths), width, kernel=1)
        self.decoder = nn.Sequential(*[conv_norm(width, width) for _ in range(decoder_blocks)])
        self.head = nn.Conv3d(width, out_channels, 1)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(encoder feature at r, the last PMF module's branch outputs, the EMA input at r/2)."""
        if any(s % self.divisor for s in x.shape[2:]):
            raise ValueError(f"HNF-Net needs spatial sizes divisible by {self.divisor}, got {tuple(x.shape[2:])}")
        skip = self.encoder(x)
        xs = [self.down(skip)]
        for m, module in enumerate(self.pmf):
            xs = module(xs)
            if m < len(self.transitions):
                if self.inter_sde is not None and m == len(self.pmf) - 2:
                    xs = self.inter_sde(xs)
                xs = xs + [self.transitions[m](xs[-1])]
        mixed = torch.cat([xs[0]] + [upsample_to(b, xs[0]) for b in xs[1:]], dim=1)
        return skip, xs, mixed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip, _, mixed = self.features(x)
        y = self.reduce(self.ema(mixed))
        y = skip + upsample_to(y, skip)
        return self.head(self.decoder(y))


@register("hnfnet", "HNF-Net (Jia et al.): PMF modules + EMA attention")
def hnfnet(**kwargs) -> HNFNet:
    """HNF-Net (Jia et al.): PMF modules + EMA attention."""
    return HNFNet(**kwargs)


@register("hnfnet_intra", "HNF-Net + intra-scale SDE blocks (Table 1, third row)")
def hnfnet_intra(**kwargs) -> HNFNet:
    """HNF-Net + intra-scale SDE blocks."""
    return HNFNet(intra_sde=True, **kwargs)


@register("hnfnetv2", "HNF-Netv2 (Jia et al., BraTS 2021): HNF-Net + intra- and inter-scale SDE")
def hnfnetv2(**kwargs) -> HNFNet:
    """HNF-Netv2: HNF-Net + intra- and inter-scale SDE blocks."""
    return HNFNet(intra_sde=True, inter_sde=True, **kwargs)


#: widths of the 3D U-Net baseline at the paper's size (see :func:`hnf_unet3d`)
PAPER_UNET_FILTERS = (56, 112, 224, 416)


@register("hnf_unet3d", "3D U-Net baseline of HNF-Netv2's Table 1 (four levels, sized to 15.80M / 1240G)")
def hnf_unet3d(in_channels: int = 4, out_channels: int = 3, filters: Sequence[int] = PAPER_UNET_FILTERS,
               **kwargs) -> UNet3D:
    """The 3D U-Net of Table 1: Cicek et al.'s four resolution levels (three down-samplings),
    two conv blocks per level (:class:`~brats_lib.models.unet3d.UNet3D`). The paper gives
    no widths; ``PAPER_UNET_FILTERS`` are the ones whose parameters and convolution MACs
    at 128^3 come closest to its 15.80M and 1240.27G."""
    return UNet3D(in_channels, out_channels, depth=len(filters), filters=filters, **kwargs)
