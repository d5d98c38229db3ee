import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn as nn

from brats_lib import inference as I
from brats_lib import labels as L
from brats_lib.data import discover_cases, load_case, read_label_file


class Oracle(nn.Module):
    """Pretends to segment: logits +/-8 from fixed channels of its input, so results are known."""

    def forward(self, x):
        return 16 * (x[:, :3] > 0.5).float() - 8


def test_parse_flips():
    assert I.parse_flips(None) == [()]
    assert len(I.parse_flips(8)) == 8 and len(set(I.parse_flips("all"))) == 8
    assert I.parse_flips([[2], [3, 4]]) == [(2,), (3, 4)]
    with pytest.raises(ValueError):
        I.parse_flips([[1]])
    with pytest.raises(ValueError, match="tta=2"):
        I.parse_flips(2)


def test_sliding_window_with_tta_is_equivariant():
    x = torch.zeros(1, 3, 20, 24, 18)
    x[:, :, 3:9, 5:15, 4:10] = 1.0
    for tta in (None, 8):
        for mode in ("window", "image"):
            prob = I.sliding_window_probabilities(Oracle(), x, (16, 16, 16), overlap=0.5, tta=tta, tta_mode=mode)
            assert prob.shape == (1, 3, 20, 24, 18)
            assert torch.allclose((prob > 0.5).float(), x)


def test_window_and_image_tta_agree_for_a_convolutional_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(4, 3, 3, padding=1)).eval()
    x = torch.randn(1, 4, 20, 20, 20)
    a = I.sliding_window_probabilities(net, x, (20, 20, 20), tta=8, tta_mode="window")
    b = I.sliding_window_probabilities(net, x, (20, 20, 20), tta=8, tta_mode="image")
    assert torch.allclose(a, b, atol=1e-5)  # one window covering the image: the two forms coincide
    c = I.sliding_window_probabilities(net, x, (20, 20, 20), tta=None)
    assert not torch.allclose(a, c, atol=1e-3)  # and flips do change the result of a non-symmetric net


def test_probabilities_filled_outside_crop_never_become_tumour():
    """Thresholds below 0.5 must not turn the region outside the brain box into tumour."""
    image = np.zeros((4, 30, 30, 30), np.float32)
    image[:, 10:20, 10:20, 10:20] = 1.0
    image[:, 12:15, 12:15, 12:15] = 5.0  # after z-score only this cube is > 0.5
    labels, prob = I.predict_case(Oracle(), image, (8, 8, 8), thresholds=(0.4, 0.4, 0.4), mode="constant")
    assert prob.shape == (3, 30, 30, 30)
    assert not labels[:10].any() and not labels[20:].any()
    assert (labels == L.ET).sum() == 27


def test_write_prediction_keeps_affine_header_and_convention(phantom_root, tmp_path):
    lc = load_case(discover_cases(phantom_root)[0])
    out = I.write_prediction(tmp_path / "p.nii.gz", lc.label, lc.affine, lc.header, "brats2021")
    img = nib.load(str(out))
    assert np.allclose(img.affine, lc.affine) and img.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(img.dataobj))) <= {0, 1, 2, 4}
    back, _ = read_label_file(out)
    assert np.array_equal(back, lc.label)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_predict_case_with_unet_runs_end_to_end(phantom_root):
    from brats_lib import models

    lc = load_case(discover_cases(phantom_root)[0])
    net = models.build("unet3d", in_channels=5, depth=3, filters=[4, 8, 8])
    labels, prob = I.predict_case(net, lc.image, (16, 16, 16), foreground="brain", tta=4)
    assert labels.shape == lc.label.shape and prob.shape == (3,) + lc.label.shape
    assert prob.min() >= 0 and prob.max() <= 1


def test_validation_fn_scores_a_perfect_model(phantom_root):
    """An oracle fed the reference regions as input gets Dice 1 everywhere."""
    from brats_lib import labels as L

    lc = load_case(discover_cases(phantom_root)[1])
    regions = L.labels_to_regions(lc.label).astype(np.float32)
    fake = type(lc)(lc.case_id, np.concatenate([regions * 10 + 1, np.ones_like(regions[:1])]), lc.label,
                    lc.affine, lc.header, lc.spacing)

    class Pass(nn.Module):
        def forward(self, x):  # the z-scored region channels are > 0 exactly inside the regions
            return 16 * (x[:, :3] > 0).float() - 8

    val = I.validation_fn([fake], (16, 16, 16), overlap=0.25)
    res = val(Pass())
    assert res == {"dice_ET": 1.0, "dice_TC": 1.0, "dice_WT": 1.0, "dice_mean": 1.0}
