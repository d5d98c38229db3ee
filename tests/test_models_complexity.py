import pytest
import torch
import torch.nn as nn

from brats_lib import models
from brats_lib.complexity import complexity, count_parameters, _count


def test_registry():
    assert "unet3d" in models.available()
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        models.build("nope")


def test_unet3d_shapes_and_deep_supervision():
    net = models.build("unet3d", in_channels=5, out_channels=3, depth=4, filters=[8, 16, 32, 32],
                       deep_supervision=True, deep_supervision_heads=2)
    x = torch.randn(2, 5, 32, 32, 32)
    net.train()
    outs = net(x)
    # heads at their decoder level's resolution (the labels are down-sampled to them) ...
    assert isinstance(outs, list) and [tuple(o.shape[2:]) for o in outs] == [(32,) * 3, (16,) * 3, (8,) * 3]
    # ... or up-sampled to the input with ds_upsample
    net_up = models.build("unet3d", in_channels=5, out_channels=3, depth=4, filters=[8, 16, 32, 32],
                          deep_supervision=True, deep_supervision_heads=2, ds_upsample=True).train()
    assert all(o.shape == (2, 3, 32, 32, 32) for o in net_up(x))
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (2, 3, 32, 32, 32)


def test_nvidia_final_model_parameter_count():
    """Depth 7, filters 64..512, 5 input channels: NVIDIA reports 50.8M parameters."""
    res = complexity("unet3d", (128, 128, 128), in_channels=5, depth=7,
                     filters=[64, 96, 128, 192, 256, 384, 512], deep_supervision=True)
    assert res["params"] == pytest.approx(50.8e6, rel=0.02)
    assert res["conv_macs"] <= res["macs"]


def test_macs_are_half_the_flops_of_a_known_conv():
    conv = nn.Conv3d(4, 8, 3, padding=1, bias=False)
    macs, conv_macs = _count(conv, torch.zeros(1, 4, 10, 10, 10))
    assert macs == conv_macs == 8 * 4 * 27 * 1000
    assert count_parameters(conv) == 8 * 4 * 27
