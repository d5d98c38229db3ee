"""OM-Net and its model-cascade baseline (Zhou et al., "One-pass Multi-task Networks with
Cross-task Guided Attention for Brain Tumor Segmentation", IEEE TIP 2020).

Read beside Section III and Figs. 2-5 of the paper (Zhou et al., IEEE TIP 2020); layer
details follow the authors' Caffe prototxts as ``notebooks/papers.md`` records them.

Backbone (Fig. 2, a 3D FusionNet), input (B, 4, X, Y, Z) with each size a multiple of 8
(paper: 32 x 32 x 16)::

    encoder level l (maps f_l = 32, 64, 128):  conv-BN-ReLU, residual block, conv-BN-ReLU, maxpool 2
    bottom (f_3 = 256):                        conv-BN-ReLU, residual block, conv-BN-ReLU, dropout 0.5
    decoder level l = 2, 1:                    deconv 2 stride 2 + BN-ReLU, + skip (sum), conv, residual block, conv
    decoder level 0:                           deconv + BN-ReLU, + skip, conv, residual block  -> F (B, 32, X, Y, Z)

    residual block: conv-BN-ReLU, conv-BN-ReLU, conv-BN, + input, ReLU   (all convs 3x3x3)

Heads on the shared feature ``F`` (32 channels):

* plain classifier (MC and OM-Net): conv3-BN-ReLU, 1x1x1 conv to C (C = 5, 5, 2);
* SE classifier (OM-Net + SE): an SE block on ``F`` before the plain classifier;
* CGA (OM-Net + CGA, Section III-C, Fig. 5) for tasks 2 and 3, with the guidance ``P``
  (softmax of the preceding task, no gradient)::

      Pt = sum of P over the tumour (task 2) / core (task 3) classes,  Pn = 1 - Pt   (Eq. 3-4)
      m_t = Re(F)^T Re(Pt) / ||.||_1,   m_n likewise                             (Eq. 5-6, CSCI)
      U_t = m_t * F,  U_n = m_n * F   (per channel)                             (Eq. 7-8)
      S_t, S_n = 1x1x1 conv(U_t), 1x1x1 conv(U_n)
      S~ = Pt * S_t + Pn * S_n                                                  (Eq. 9, CompSeg)
      S  = 1x1x1 conv(S~)

  variants: ``minus`` (S~ = S_t + S_n, "CGA-"), ``tumour`` (S~ = S_t, "CGAt"),
  ``normal`` (S~ = S_n, "CGAn").

Classes of the 5-class tasks (the authors' code): 0 background, 1 NCR/NET, 2 ED, 3 ET,
4 normal brain tissue; task 3: 0 not ET, 1 ET.

Registered: ``omnet_mc1`` (one cascade network), ``omnet``, ``omnet_se``, ``omnet_cga``,
``omnet_cga_minus``, ``omnet_cga_t``, ``omnet_cga_n``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from brats_lib.models import register

#: feature maps per level (Fig. 2)
PAPER_FEATURES = (32, 64, 128, 256)
#: classes of the three tasks (coarse WT, refined 5-class, ET vs rest)
TASK_CLASSES = (5, 5, 2)
#: 5-class indices (the authors' label code)
BACKGROUND5, NCR5, ED5, ET5, NORMAL5 = 0, 1, 2, 3, 4
TUMOUR5 = (NCR5, ED5, ET5)
CORE5 = (NCR5, ET5)


#: the prototxts' bias filler, and the biases' learning-rate multiplier (decay multiplier 0)
BIAS_INIT, BIAS_LR_MULT = 0.1, 2.0


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """Three 3x3x3 conv-BN (ReLU after the first two), identity sum, ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(channels, channels), conv_bn_relu(channels, channels),
                                  nn.Conv3d(channels, channels, 3, padding=1), nn.BatchNorm3d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class FusionBackbone(nn.Module):
    """The shared part of Fig. 2 (outlined yellow in the paper): (B, C_in, X, Y, Z) -> (B, f_0, X, Y, Z)."""

    def __init__(self, in_channels: int = 4, features: Sequence[int] = PAPER_FEATURES, dropout: float = 0.5):
        super().__init__()
        f = list(features)
        self.down = nn.ModuleList()
        cin = in_channels
        for c in f:
            self.down.append(nn.Sequential(conv_bn_relu(cin, c), ResidualBlock(c), conv_bn_relu(c, c)))
            cin = c
        self.pool = nn.MaxPool3d(2)
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.up = nn.ModuleList(nn.Sequential(nn.ConvTranspose3d(f[i + 1], f[i], 2, stride=2), nn.BatchNorm3d(f[i]),
                                              nn.ReLU(inplace=True)) for i in range(len(f) - 1))
        # decoder level i: conv, residual block, conv; level 0 stops after the residual block
        # (its last conv is the first layer of each task's classifier)
        self.dec = nn.ModuleList(
            nn.Sequential(conv_bn_relu(f[i], f[i]), ResidualBlock(f[i]), *([conv_bn_relu(f[i], f[i])] if i else []))
            for i in range(len(f) - 1))
        self.out_channels = f[0]
        self.divisor = 2 ** (len(f) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, level in enumerate(self.down):
            x = level(x)
            if i < len(self.down) - 1:
                skips.append(x)
                x = self.pool(x)
        x = self.dropout(x)
        for i in reversed(range(len(self.up))):
            x = self.dec[i](self.up[i](x) + skips[i])
        return x


class Classifier(nn.Module):
    """A task's own layers: conv3-BN-ReLU then a 1x1x1 classification conv (optionally an SE block first)."""

    def __init__(self, channels: int, classes: int, se_reduction: int = 0):
        super().__init__()
        self.se = SqueezeExcitation(channels, se_reduction) if se_reduction else nn.Identity()
        self.conv = conv_bn_relu(channels, channels)
        self.classify = nn.Conv3d(channels, classes, 1)

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None = None) -> torch.Tensor:
        return self.classify(self.conv(self.se(x)))


class SqueezeExcitation(nn.Module):
    """Hu et al.: x * sigmoid(W2 ReLU(W1 GAP(x))), one weight per channel."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc = nn.Sequential(nn.Conv3d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv3d(hidden, channels, 1),
                                nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3, 4), keepdim=True))


def channel_importance(features: torch.Tensor, prob: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """CSCI, Eqs. 5-6: (B, K, ...) features and (B, 1, ...) category probability ->
    (B, K) importance m = Re(F)^T Re(P), L1-normalised over the K channels."""
    m = (features * prob).flatten(2).sum(-1)
    return m / (m.abs().sum(dim=1, keepdim=True) + eps)


class CGA(nn.Module):
    """Cross-task guided attention (Fig. 5): CSCI block + CompSeg block.

    ``forward(F, P, classes)``: ``F`` (B, K, ...) the shared features, ``P`` (B, C', ...) the
    preceding task's probabilities, ``classes`` the indices of P summed into Pt.
    ``fusion``: ``"cga"`` (Eq. 9), ``"minus"`` (S_t + S_n), ``"tumour"`` (S_t), ``"normal"`` (S_n).
    """

    FUSIONS = ("cga", "minus", "tumour", "normal")

    def __init__(self, channels: int, classes: int, guide_classes: Sequence[int], fusion: str = "cga"):
        super().__init__()
        if fusion not in self.FUSIONS:
            raise ValueError(f"CGA fusion must be one of {self.FUSIONS}, got {fusion!r}")
        self.fusion, self.guide_classes = fusion, tuple(guide_classes)
        self.score_t = nn.Conv3d(channels, classes, 1) if fusion != "normal" else None
        self.score_n = nn.Conv3d(channels, classes, 1) if fusion != "tumour" else None
        self.classify = nn.Conv3d(classes, classes, 1)
        self.last_importance: tuple[torch.Tensor, torch.Tensor] | None = None  # (m_t, m_n) of the last call

    def forward(self, x: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        p = guidance.detach()                                   # no gradient through the guidance
        pt = p[:, list(self.guide_classes)].sum(1, keepdim=True)  # Eq. 3
        pn = 1.0 - pt                                           # Eq. 4 (softmax sums to 1)
        m_t, m_n = channel_importance(x, pt), channel_importance(x, pn)
        self.last_importance = (m_t.detach(), m_n.detach())
        s_t = self.score_t(x * m_t[..., None, None, None]) if self.score_t is not None else None
        s_n = self.score_n(x * m_n[..., None, None, None]) if self.score_n is not None else None
        if self.fusion == "cga":
            s = pt * s_t + pn * s_n                             # Eq. 9
        elif self.fusion == "minus":
            s = s_t + s_n
        else:
            s = s_t if s_n is None else s_n
        return self.classify(s)


class OMNet(nn.Module):
    """One-pass multi-task network: a shared backbone and one classifier per task.

    ``forward(x)`` (inference, Fig. 1b) returns the logits of the three tasks for the same
    input, ``[(B, 5, ...), (B, 5, ...), (B, 2, ...)]``; with ``head="cga"`` task 2 is guided
    by task 1 and task 3 by task 2. Training with separate data per task goes through
    :meth:`features` and :meth:`task_logits` (see :mod:`brats_lib.papers.omnet_cga.pipeline`).

    Args:
        in_channels: MR sequences (4).
        features: feature maps per level (paper 32, 64, 128, 256).
        classes: classes of the tasks (paper 5, 5, 2). One entry gives a single-task
            network: a model-cascade network (MC).
        head: ``"plain"``, ``"se"`` (SE block before each classifier) or ``"cga"``.
        cga_fusion: ``"cga"``, ``"minus"``, ``"tumour"`` or ``"normal"`` (Table I variants).
        se_reduction: SE bottleneck ratio.
        dropout: dropout at the bottom level (prototxt: 0.5).
    """

    def __init__(self, in_channels: int = 4, features: Sequence[int] = PAPER_FEATURES,
                 classes: Sequence[int] = TASK_CLASSES, head: str = "plain", cga_fusion: str = "cga",
                 se_reduction: int = 8, dropout: float = 0.5):
        super().__init__()
        if head not in ("plain", "se", "cga"):
            raise ValueError(f"head must be 'plain', 'se' or 'cga', got {head!r}")
        if head == "cga" and tuple(classes) != TASK_CLASSES:
            raise ValueError(f"CGA needs the three tasks {TASK_CLASSES}, got classes {list(classes)}")
        self.backbone = FusionBackbone(in_channels, features, dropout)
        k = self.backbone.out_channels
        self.head, self.classes = head, tuple(int(c) for c in classes)
        heads: list[nn.Module] = []
        for t, c in enumerate(self.classes):
            if head == "cga" and t > 0:
                heads.append(CGA(k, c, TUMOUR5 if t == 1 else CORE5, cga_fusion))
            else:
                heads.append(Classifier(k, c, se_reduction if head == "se" else 0))
        self.heads = nn.ModuleList(heads)
        self.divisor = self.backbone.divisor
        # as the prototxts: MSRA weights; biases 0.1, except the first conv's, 0
        for i, m in enumerate(m for m in self.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0.0 if i == 0 else BIAS_INIT)

    def optimizer_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The prototxts' ``lr_mult`` / ``decay_mult``: conv and deconv weights at ``lr`` with
        weight decay; their biases at 2 x ``lr`` without weight decay; every other
        parameter (batch norm) as the weights."""
        biases = {id(m.bias) for m in self.modules()
                  if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)) and m.bias is not None}
        trainable = [q for q in self.parameters() if q.requires_grad]
        return [{"params": [q for q in trainable if id(q) not in biases], "lr": lr, "weight_decay": weight_decay},
                {"params": [q for q in trainable if id(q) in biases], "lr": BIAS_LR_MULT * lr, "weight_decay": 0.0}]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def task_logits(self, task: int, feats: torch.Tensor, guidance: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of task ``task`` (0-based) on shared features; CGA heads need ``guidance``
        (the preceding task's probabilities on the same features)."""
        head = self.heads[task]
        if isinstance(head, CGA):
            if guidance is None:
                raise ValueError(f"task {task + 1} has a CGA head and needs the guidance of task {task}")
            return head(feats, guidance)
        return head(feats)

    def guidance(self, task: int, feats: torch.Tensor) -> torch.Tensor:
        """The cross-task forward flow (Fig. 4): probabilities of task ``task - 1`` on
        ``feats``, computed without gradient (through its own guidance chain)."""
        with torch.no_grad():
            g = None
            for t in range(task):
                g = torch.softmax(self.task_logits(t, feats, g), 1)
        return g

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.features(x)
        outs, g = [], None
        for t in range(len(self.heads)):
            outs.append(self.task_logits(t, feats, g))
            g = torch.softmax(outs[-1], 1).detach()
        return outs


@register("omnet_mc1", "OM-Net paper: one model-cascade network (3D FusionNet, 5 classes)")
def omnet_mc1(in_channels: int = 4, features: Sequence[int] = PAPER_FEATURES, classes: int = 5,
              dropout: float = 0.5) -> OMNet:
    return OMNet(in_channels, features, (classes,), "plain", dropout=dropout)


@register("omnet", "OM-Net (Zhou et al. 2020): shared FusionNet backbone, three task classifiers")
def omnet(in_channels: int = 4, features: Sequence[int] = PAPER_FEATURES, dropout: float = 0.5) -> OMNet:
    return OMNet(in_channels, features, TASK_CLASSES, "plain", dropout=dropout)


@register("omnet_se", "OM-Net + SE: an SE block before each task classifier")
def omnet_se(in_channels: int = 4, features: Sequence[int] = PAPER_FEATURES, dropout: float = 0.5,
             se_reduction: int = 8) -> OMNet:
    return OMNet(in_channels, features, TASK_CLASSES, "se", se_reduction=se_reduction, dropout=dropout)


def _cga(fusion: str):
    def build(in_channels: int = 4, features: Sequence[int] = PAPER_FEATURES, dropout: float = 0.5) -> OMNet:
        return OMNet(in_channels, features, TASK_CLASSES, "cga", cga_fusion=fusion, dropout=dropout)
    return build


register("omnet_cga", "OM-Net + CGA: CGA-tumour and CGA-core heads (CSCI + CompSeg)")(_cga("cga"))
register("omnet_cga_minus", "OM-Net + CGA-: CompSeg sums S_t and S_n without Pt, Pn")(_cga("minus"))
register("omnet_cga_t", "OM-Net + CGAt: CompSeg with the tumour pathway only")(_cga("tumour"))
register("omnet_cga_n", "OM-Net + CGAn: CompSeg with the non-tumour pathway only")(_cga("normal"))
