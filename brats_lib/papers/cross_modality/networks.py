"""Networks of the cross-modality deep feature learning framework (Zhang et al.,
"Cross-Modality Deep Feature Learning for Brain Tumor Segmentation", Pattern Recognition 2021).

Read beside Section 3, Figs. 3-4, 6 and Table 1 of the paper (Zhang et al., Pattern Recognition 2021);
what the text leaves open follows ``notebooks/papers.md`` (marked "inferred" there).

* :class:`CrossModalityUNet` (Fig. 3) - the generator of CMFT and, with a 4-kernel last
  layer, the single-modality(-pair) branch S_A / S_B of CMFF: MONAI's
  :class:`~monai.networks.nets.BasicUNet` with instance norm, filters 16, 32, 64, 128, 256
  (doubling after each of four down-samplings), two 3^3 convs per level, transposed-conv
  up-sampling, a 1x1x1 output conv. Input (B, 2, X, Y, Z) - a modality pair (Sec. 3.3) -
  with X, Y, Z multiples of 16; output (B, out_channels, X, Y, Z). :meth:`decode` returns
  the features of its last two conv layers (B, 16, X, Y, Z) each, which CMFF fuses.
* :class:`CMFTDiscriminator` (Table 1) - 4^3 convs with strides 2, 2, 2, 2, 1 and 16, 32,
  64, 128, 1 filters, instance norm after convs 2-4, LeakyReLU 0.2; a 128^3 input gives
  a 7^3 map of real/fake scores. 698,609 parameters with a 2-channel (pair) input.
* :class:`CrossModalityFusionNet` (Figs. 2 right, 4) - S_A on pair A, S_B on pair B
  (both pick their channels from the 4-modality input) and the fusion branch S_F::

      h   = conv-IN-ReLU(conv-IN-ReLU([f1_A, f2_A, P_A, f1_B, f2_B, P_B]))     (fuse features + predictions)
      M_A = 1 - P_A[background],  M_B = 1 - P_B[background]                  (predicted tumour masks)
      g   = h + W [h * M_A, h * M_B]   (W: 1x1x1 conv, zero at the start)   (mask-guided attention, MG)
      S_F = 1x1x1 conv(g)

  ``attention="none"`` drops the block (g = h, "Ours w/o MG"), ``"ca"`` replaces it by a
  conventional bottom-up attention, CBAM [21], in the same residual form and position
  (g = h + W CBAM(h), W zero at the start, "Ours w CA"), so that the row differs from
  "Ours" in the attention alone. In training mode
  (or with ``branches=True``) the forward returns ``[S_F, S_A, S_B]`` logits (Eq. 7 sums a
  Dice loss over the three), in eval mode S_F's logits (B, 4, X, Y, Z) only.

Classes (4 kernels in the last layer): 0 background, 1 NCR/NET, 2 ED, 3 ET (canonical).
Registered: ``cmft_generator``, ``cmft_discriminator``, ``cmff_branch``, ``cmff``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from monai.networks.nets import BasicUNet

from brats_lib.models import register
from brats_lib.models.blocks import CBAM

#: Sec. 4.1: 16 base filters, doubled after each down-sampling ([INF] five levels)
PAPER_FEATURES = (16, 32, 64, 128, 256)
#: Table 1: filters of the four stride-2 convs (the fifth conv has one)
PAPER_DISC_FILTERS = (16, 32, 64, 128)
CLASSES = 4
ATTENTIONS = ("mg", "ca", "none")


@register("cmft_generator", "3D U-Net of Fig. 3 (IN, 16-256 filters): CMFT generator / CMFF branch")
class CrossModalityUNet(BasicUNet):
    """The U-Net of Fig. 3 (generator and single-modality-pair branch).

    Args:
        in_channels: 2 for a modality pair (1 for one modality).
        out_channels: ``in_channels`` for a generator (a pair in, the other pair out);
            4 classes for the S_A / S_B branch.
        features: filters of the five levels (paper 16, 32, 64, 128, 256); the last decoder
            level has ``features[0]``.
        channels: which channels of a wider input this network reads (S_A: the indices of
            pair A in the 4-modality image); None reads the input as given.
        spatial_dims: 3, or 2 for the 2D network pre-trained in place of PASCAL VOC.
    """

    def __init__(self, in_channels: int = 2, out_channels: int = 2, features: Sequence[int] = PAPER_FEATURES,
                 channels: Sequence[int] | None = None, spatial_dims: int = 3):
        features = tuple(int(f) for f in features)
        if len(features) != 5:
            raise ValueError(f"features must list the five levels' filters, got {list(features)}")
        if channels is not None and len(channels) != in_channels:
            raise ValueError(f"channels {list(channels)} must name in_channels={in_channels} input channels")
        super().__init__(spatial_dims, in_channels, out_channels, features=features + (features[0],),
                         act=("relu", {"inplace": True}), norm=("instance", {"affine": True}), upsample="deconv")
        self.channels = None if channels is None else [int(c) for c in channels]

    def pick(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.channels is None else x[:, self.channels]

    def decode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of the last two conv layers (Fig. 3, red): (B, features[0], X, Y, Z) each."""
        x = self.pick(x)
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        u = self.upcat_2(self.upcat_3(self.upcat_4(self.down_4(x3), x3), x2), x1)
        last = self.upcat_1
        h = torch.cat([x0, last.upsample(u)], dim=1)
        f1 = last.convs.conv_0(h)
        return f1, last.convs.conv_1(f1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(self.decode(x)[1])


@register("cmff_branch", "S_A / S_B of CMFF: the Fig. 3 U-Net with a 4-class last layer on one modality pair")
def cmff_branch(in_channels: int = 4, pair: Sequence[int] = (0, 1), features: Sequence[int] = PAPER_FEATURES,
                classes: int = CLASSES) -> CrossModalityUNet:
    """A single-modality-pair branch reading ``pair`` of a ``in_channels``-modality input."""
    if max(pair) >= in_channels:
        raise ValueError(f"pair {list(pair)} is outside the {in_channels} input channels")
    return CrossModalityUNet(len(pair), classes, features, channels=pair)


@register("cmft_discriminator", "Table 1 discriminator: 4^3 convs, strides 2, 2, 2, 2, 1, IN, LeakyReLU")
class CMFTDiscriminator(nn.Sequential):
    """Table 1, layer by layer (L1-L12); ``in_channels`` 1 for one modality, 2 for a pair.

    Shapes: (B, in_channels, X, Y, Z) -> (B, 1, X/16 - 1, Y/16 - 1, Z/16 - 1) least-squares
    real/fake scores (sizes >= 32 so that the last conv has room)."""

    def __init__(self, in_channels: int = 2, filters: Sequence[int] = PAPER_DISC_FILTERS, negative_slope: float = 0.2):
        layers: list[nn.Module] = []
        cin = in_channels
        for i, f in enumerate(filters):
            layers.append(nn.Conv3d(cin, f, 4, stride=2, padding=1))
            if i > 0:
                layers.append(nn.InstanceNorm3d(f))
            layers.append(nn.LeakyReLU(negative_slope, inplace=True))
            cin = f
        layers.append(nn.Conv3d(cin, 1, 4, stride=1, padding=1))
        super().__init__(*layers)


class ConvINReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3):
        super().__init__(nn.Conv3d(cin, cout, kernel, padding=kernel // 2), nn.InstanceNorm3d(cout, affine=True),
                         nn.ReLU(inplace=True))


class MaskGuidedAttention(nn.Module):
    """Fig. 4's block: the fused features re-weighted by the masks S_A and S_B predicted
    (top-down), channel-mixed and added back: ``g = h + W [h * M_A, h * M_B]`` (W a 1x1x1
    conv). W starts at zero, so the block starts as the identity ("w/o MG") and learns how
    much guidance to add (zero-initialised residual branch, Goyal et al. 2017)."""

    def __init__(self, channels: int):
        super().__init__()
        self.mix = nn.Conv3d(2 * channels, channels, 1)
        nn.init.zeros_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)

    def forward(self, h: torch.Tensor, m_a: torch.Tensor, m_b: torch.Tensor) -> torch.Tensor:
        return h + self.mix(torch.cat([h * m_a, h * m_b], 1))


class ResidualCBAM(nn.Module):
    """"Ours w CA": CBAM (bottom-up channel and spatial attention) in the place and the
    residual form of the mask-guided block, ``g = h + W CBAM(h)`` with W a zero-initialised
    1x1x1 conv, so that it too starts as the identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.cbam = CBAM(channels)
        self.mix = nn.Conv3d(channels, channels, 1)
        nn.init.zeros_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.mix(self.cbam(h))


class FusionBranch(nn.Module):
    """S_F (Fig. 4): fuse the two branches' last-two-layer features and predictions, attend, classify."""

    def __init__(self, features: int, classes: int = CLASSES, attention: str = "mg"):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        self.attention_kind = attention
        self.fuse = nn.Sequential(ConvINReLU(2 * (2 * features + classes), 2 * features),
                                  ConvINReLU(2 * features, features))
        self.attention = (MaskGuidedAttention(features) if attention == "mg"
                          else ResidualCBAM(features) if attention == "ca" else None)
        self.classify = nn.Conv3d(features, classes, 1)

    def forward(self, a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
        """``a`` = (f1_A, f2_A, logits_A), ``b`` likewise."""
        p_a, p_b = torch.softmax(a[2], 1), torch.softmax(b[2], 1)
        h = self.fuse(torch.cat([a[0], a[1], p_a, b[0], b[1], p_b], 1))
        if self.attention_kind == "mg":
            h = self.attention(h, 1 - p_a[:, :1], 1 - p_b[:, :1])
        elif self.attention_kind == "ca":
            h = self.attention(h)
        return self.classify(h)


@register("cmff", "CMFF network: S_A, S_B and the fusion branch with mask-guided (or CBAM / no) attention")
class CrossModalityFusionNet(nn.Module):
    """The cross-modality feature fusion network (Sec. 3.2).

    Args:
        in_channels: modalities of the input (4: t1, t1ce, t2, flair).
        pair_a, pair_b: channel indices of the two modality pairs (Sec. 3.3: (t1, t1ce), (t2, flair)).
        features: the branches' U-Net filters; the fusion branch works at ``features[0]``.
        attention: ``"mg"`` (mask-guided), ``"ca"`` (CBAM) or ``"none"``.
    """

    def __init__(self, in_channels: int = 4, pair_a: Sequence[int] = (0, 1), pair_b: Sequence[int] = (2, 3),
                 features: Sequence[int] = PAPER_FEATURES, classes: int = CLASSES, attention: str = "mg"):
        super().__init__()
        self.s_a = cmff_branch(in_channels, pair_a, features, classes)
        self.s_b = cmff_branch(in_channels, pair_b, features, classes)
        self.s_f = FusionBranch(int(features[0]), classes, attention)

    def forward(self, x: torch.Tensor, branches: bool | None = None):
        fa, fb = self.s_a.decode(x), self.s_b.decode(x)
        la, lb = self.s_a.final_conv(fa[1]), self.s_b.final_conv(fb[1])
        lf = self.s_f((*fa, la), (*fb, lb))
        if branches or (branches is None and self.training):
            return [lf, la, lb]
        return lf
