"""2D attention R2U-Net with APR modules and multi-task deep supervision (MTDS), after Ma,
Tang and Guo, "Multi-Task Deep Supervision on Attention R2U-Net for Brain Tumor
Segmentation" (Frontiers in Oncology 2021), Section 2; and the variants of its ablations.

===================================  =========================================================
name                                 row
===================================  =========================================================
``mtds_attention_r2unet``            the proposed model: APR encoder, SE with dropout, DS heads
``attention_r2unet_se_nodropout``    Table 1: SE modules without dropout (with DS heads)
``attention_r2unet_plain``           Table 3: no shortcut, no attention gates (no DS)
``attention_r2unet_residual``        Table 3: shortcut (pre-activation residual units), no gates
``attention_r2unet_skip_gates``      Table 3: shortcut + attention gates on the skips (Oktay)
``attention_r2unet_apr``             Table 3: APR modules (= Table 4 "no deep supervision")
===================================  =========================================================

Single-task deep supervision (Table 4) is ``mtds_attention_r2unet`` trained with the WT
mask on every head: the network is the same, only the targets differ (see
:mod:`brats_lib.papers.attention_r2unet_mtds.pipeline`).

Layout (``base`` = 32 in the paper)::

    encoder level l (l = 0..3, width base 2^l, max-pool 2 between levels):
        conv3x3 (entry) -> pre-activation residual unit -> attention gate  (= APR) -> SE + dropout
    decoder level l (l = 2, 1, 0):
        transposed conv 2x2 -> concat skip -> pre-activation conv block -> SE + dropout
    main head: 1x1 conv -> WT logit (sigmoid at inference)
    deep-supervision heads (1x1 conv, up-sampled to the input): ET at level 0, NCR/NET at
    level 1, ED at level 2 ("shallow to deep", shallow = high resolution).

* pre-activation residual unit (He et al. 2016): x_{l+1} = x_l + F_r(F_r(x_l)),
  F_r(x) = conv3x3(ReLU(BN(x))).
* attention gate (the paper's, inside APR): y_{l+1} = y_l * sigmoid(conv1x1(ReLU(y_l))),
  one spatial map per image (conv1x1 to one channel).
* SE (Hu et al. 2018) with dropout on the channel weights (rate not given: ``se_dropout``).

Shapes: input (B, 4, H, W), H and W divisible by 8; output (B, 1, H, W) WT logits, or in
training mode with heads a list [WT, ET, NCR/NET, ED] of (B, 1, H, W) logits.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets.attentionunet import AttentionBlock

from brats_lib.models import register

#: the auxiliary heads in order, with the decoder level (0 = full resolution) each sits on
HEADS: tuple[tuple[str, int], ...] = (("ET", 0), ("NCR", 1), ("ED", 2))


def preact_conv(cin: int, cout: int) -> nn.Sequential:
    """F_r: BN - ReLU - conv3x3."""
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=False), nn.Conv2d(cin, cout, 3, padding=1))


class PreActResidualUnit(nn.Module):
    """x + F_r(F_r(x)) (``shortcut``), or F_r(F_r(x)) alone (the "no shortcut" ablation)."""

    def __init__(self, channels: int, shortcut: bool = True):
        super().__init__()
        self.body = nn.Sequential(preact_conv(channels, channels), preact_conv(channels, channels))
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.shortcut else y


class AttentionGate(nn.Module):
    """y * sigmoid(conv1x1(ReLU(y))): a spatial attention map computed from the features
    themselves. The last map is kept in ``last_map`` when ``keep`` is set (for figures)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)
        self.keep, self.last_map = False, None

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        a = torch.sigmoid(self.conv(F.relu(y)))
        if self.keep:
            self.last_map = a.detach()
        return y * a


class SEDropout(nn.Module):
    """Squeeze-and-excitation with dropout on the channel weights:
    x * Dropout(sigmoid(W2 ReLU(W1 GAP(x)))). The last weights are kept when ``keep`` is set."""

    def __init__(self, channels: int, reduction: int = 8, dropout: float = 0.2):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels),
                                nn.Sigmoid())
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.keep, self.last_weights = False, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dropout(self.fc(x.mean(dim=(2, 3))))
        if self.keep:
            self.last_weights = w.detach()
        return x * w[:, :, None, None]


class AttentionR2UNet(nn.Module):
    """The 2D network of Ma et al. and its ablation variants.

    Args:
        in_channels: 4 MR modalities.
        base: kernels of the first residual unit (paper 32), doubling per level.
        levels: encoder levels (paper 4: three down-samplings).
        shortcut: identity shortcut in the encoder units (pre-activation residual units).
        gates: ``"apr"`` attention gates inside the encoder modules (APR), ``"skip"`` Oktay's
            gates on the skip connections, ``"none"``.
        se_dropout: dropout rate on the SE channel weights (0 = plain SE).
        deep_supervision: add the three auxiliary heads (training mode only).
    """

    def __init__(self, in_channels: int = 4, base: int = 32, levels: int = 4, shortcut: bool = True,
                 gates: str = "apr", se_dropout: float = 0.2, deep_supervision: bool = True,
                 se_reduction: int = 8):
        super().__init__()
        if gates not in ("apr", "skip", "none"):
            raise ValueError(f"gates must be 'apr', 'skip' or 'none', got {gates!r}")
        if deep_supervision and levels < 3:
            raise ValueError("the three deep-supervision heads need at least 3 levels")
        widths = [base * 2 ** i for i in range(levels)]
        self.widths, self.divisor, self.gates, self.deep_supervision = widths, 2 ** (levels - 1), gates, deep_supervision
        self.entry = nn.ModuleList(nn.Conv2d(in_channels if i == 0 else widths[i - 1], w, 3, padding=1)
                                   for i, w in enumerate(widths))
        self.units = nn.ModuleList(PreActResidualUnit(w, shortcut) for w in widths)
        self.apr_gates = nn.ModuleList(AttentionGate(w) if gates == "apr" else nn.Identity() for w in widths)
        self.enc_se = nn.ModuleList(SEDropout(w, se_reduction, se_dropout) for w in widths)
        dec = range(levels - 1)  # decoder level i receives level i + 1
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in dec)
        self.skip_gates = nn.ModuleList(
            AttentionBlock(2, f_int=max(widths[i] // 2, 1), f_g=widths[i], f_l=widths[i]) if gates == "skip"
            else nn.Identity() for i in dec)
        self.dec_blocks = nn.ModuleList(nn.Sequential(preact_conv(2 * widths[i], widths[i]),
                                                      preact_conv(widths[i], widths[i])) for i in dec)
        self.dec_se = nn.ModuleList(SEDropout(widths[i], se_reduction, se_dropout) for i in dec)
        self.head = nn.Conv2d(widths[0], 1, 1)
        self.ds_heads = nn.ModuleList(nn.Conv2d(widths[level], 1, 1) for _, level in HEADS) if deep_supervision \
            else nn.ModuleList()

    def forward(self, x: torch.Tensor):
        if any(s % self.divisor for s in x.shape[2:]):
            raise ValueError(f"input sizes {tuple(x.shape[2:])} must be divisible by {self.divisor}")
        skips = []
        for i in range(len(self.widths)):
            if i:
                x = F.max_pool2d(x, 2)
            x = self.enc_se[i](self.apr_gates[i](self.units[i](self.entry[i](x))))
            skips.append(x)
        x = skips.pop()
        decoded: dict[int, torch.Tensor] = {}
        for i in reversed(range(len(self.widths) - 1)):
            up = self.up[i](x)
            skip = self.skip_gates[i](g=up, x=skips[i]) if self.gates == "skip" else skips[i]
            x = self.dec_se[i](self.dec_blocks[i](torch.cat([up, skip], dim=1)))
            decoded[i] = x
        out = self.head(x)  # "1 convolutional layer (1x1), and 1 sigmoid", straight after the last SE module
        if not (self.deep_supervision and self.training):
            return out
        size = out.shape[2:]
        heads = [F.interpolate(h(decoded[level]), size=size, mode="bilinear", align_corners=False)
                 if level else h(decoded[level]) for h, (_, level) in zip(self.ds_heads, HEADS)]
        return [out] + heads

    def all_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 4, H, W) logits of the main head and the three auxiliary heads (WT, ET, NCR/NET,
        ED) in eval mode: the auxiliary heads give the sub-region predictions."""
        was = self.training
        self.train()
        bn = [m for m in self.modules() if isinstance(m, (nn.BatchNorm2d, nn.Dropout))]
        for m in bn:
            m.eval()
        try:
            return torch.cat(self(x), dim=1)  # through __call__, so hooks (MAC counting) see it
        finally:
            self.train(was)


def _variant(**fixed):
    def build(in_channels: int = 4, base: int = 32, se_dropout: float = 0.2, **kwargs) -> AttentionR2UNet:
        kw = dict(in_channels=in_channels, base=base, se_dropout=se_dropout)
        kw.update(kwargs)
        kw.update(fixed)
        return AttentionR2UNet(**kw)
    return build


register("mtds_attention_r2unet", "Attention R2U-Net + MTDS (Ma et al. 2021): APR, SE + dropout, three heads")(
    _variant(shortcut=True, gates="apr", deep_supervision=True))
register("attention_r2unet_se_nodropout", "Attention R2U-Net + MTDS, SE without dropout (Table 1)")(
    _variant(shortcut=True, gates="apr", deep_supervision=True, se_dropout=0.0))
register("attention_r2unet_plain", "Attention R2U-Net ablation: no shortcut, no attention gates (Table 3)")(
    _variant(shortcut=False, gates="none", deep_supervision=False))
register("attention_r2unet_residual", "Attention R2U-Net ablation: shortcut, no attention gates (Table 3)")(
    _variant(shortcut=True, gates="none", deep_supervision=False))
register("attention_r2unet_skip_gates", "Attention R2U-Net ablation: shortcut + gates on the skips (Table 3)")(
    _variant(shortcut=True, gates="skip", deep_supervision=False))
register("attention_r2unet_apr", "Attention R2U-Net ablation: APR modules, no deep supervision (Tables 3-4)")(
    _variant(shortcut=True, gates="apr", deep_supervision=False))


# ------------------------------------------------------------------ Table 6: MONAI's 2D networks
def _sizes(base: int, n: int) -> Sequence[int]:
    return tuple(base * 2 ** i for i in range(n))


@register("unet2d", "MONAI UNet, 2D, one sigmoid output (Table 6 comparison)")
def unet2d(in_channels: int = 4, base: int = 32, **_) -> nn.Module:
    from monai.networks.nets import UNet

    return UNet(2, in_channels, 1, channels=_sizes(base, 4), strides=(2, 2, 2), num_res_units=2, norm="batch")


@register("attention_unet2d", "MONAI AttentionUnet (Oktay et al.), 2D (Table 6 comparison)")
def attention_unet2d(in_channels: int = 4, base: int = 32, **_) -> nn.Module:
    from monai.networks.nets import AttentionUnet

    return AttentionUnet(2, in_channels, 1, channels=_sizes(base, 4), strides=(2, 2, 2))


@register("unetplusplus2d", "MONAI BasicUNetPlusPlus (Zhou et al.), 2D (Table 6 comparison)")
def unetplusplus2d(in_channels: int = 4, base: int = 32, **_) -> nn.Module:
    from monai.networks.nets import BasicUNetPlusPlus

    class _Main(nn.Module):  # BasicUNetPlusPlus returns a list; keep its main output
        def __init__(self):
            super().__init__()
            self.net = BasicUNetPlusPlus(2, in_channels, 1, features=(*_sizes(base, 5), base), norm="batch")

        def forward(self, x):
            return self.net(x)[0]

    return _Main()


@register("segresnet2d", "MONAI SegResNet (Myronenko), 2D (Table 6 comparison)")
def segresnet2d(in_channels: int = 4, base: int = 32, **_) -> nn.Module:
    from monai.networks.nets import SegResNet

    return SegResNet(2, init_filters=base, in_channels=in_channels, out_channels=1, norm="batch")
