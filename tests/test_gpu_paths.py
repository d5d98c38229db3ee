"""The GPU training and inference paths, exercised on the CPU: batched on-device
augmentation, uint8 targets encoded on the device, channels-last layouts, fused optimisers,
the throughput variants and the prepared GPU measurement script."""
from __future__ import annotations

import math
import subprocess

import numpy as np
import pytest
import torch
from scipy import ndimage

from benchmarks import bench_training
from brats_lib import models
from brats_lib.augmentation import DeviceBatch, DeviceNnUNetAugmentation
from brats_lib.sampling import PatchDataset, encode_target, regions_on_device
from brats_lib.training import TrainConfig, fit, load_checkpoint, make_optimizer
from conftest import REPO

OFF = dict(zoom_p=0.0, flip_p=0.0, noise_p=0.0, blur_p=0.0, brightness_p=0.0, contrast_p=0.0)


def _batch(b=3, size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(b, 5, size, size, size, generator=g)
    image[:, 4] = (image[:, 4] > 0).float()  # a one-hot foreground channel
    target = (torch.rand(b, 3, size, size, size, generator=g) > 0.6).float()
    return image, target


def test_device_augmentation_with_every_step_off_is_the_identity():
    image, target = _batch()
    out, t = DeviceNnUNetAugmentation(**OFF)(image, target, step=5)
    assert torch.equal(out, image) and torch.equal(t, target)


def test_device_flips_flip_image_and_target_together():
    image, target = _batch()
    out, t = DeviceNnUNetAugmentation(**{**OFF, "flip_p": 1.0})(image, target, step=0)
    assert torch.equal(out, image.flip(2, 3, 4)) and torch.equal(t, target.flip(2, 3, 4))


def test_device_blur_equals_scipys_gaussian_filter_per_sample():
    image, _ = _batch(b=2, size=14)
    aug = DeviceNnUNetAugmentation(**OFF)
    sigma = torch.tensor([0.6, 1.4])
    out = aug.blur(image[:, :4], sigma, torch.tensor([True, False]))
    radius = math.ceil(3 * aug.blur_sigma[1])
    ref = np.stack([ndimage.gaussian_filter(ch, 0.6, mode="nearest", truncate=radius / 0.6) for ch in image[0, :4].numpy()])
    assert np.abs(out[0].numpy() - ref).max() < 1e-5
    assert torch.equal(out[1], image[1, :4])  # not chosen: untouched


def test_device_zoom_is_trilinear_about_the_centre():
    image, target = _batch(b=2, size=10)
    aug = DeviceNnUNetAugmentation(**OFF)
    s = 1.3
    out, t = aug.zoom(image, target, torch.tensor([s, s]), torch.tensor([True, False]))
    n = image.shape[-1]
    c = (n - 1) / 2
    coords = np.meshgrid(*[c + (np.arange(n) - c) / s] * 3, indexing="ij")
    ref = ndimage.map_coordinates(image[0, 0].numpy(), coords, order=1, mode="nearest")
    assert np.abs(out[0, 0].numpy() - ref).max() < 1e-4
    assert set(t.unique().tolist()) <= {0.0, 1.0} and set(out[0, 4].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(out[1], image[1]) and torch.equal(t[1], target[1])
    # zooming in shrinks nothing in the middle and enlarges what is there: the centre voxel's
    # target stays, and a centred object grows by about s per axis
    obj = torch.zeros(1, 3, 21, 21, 21)
    obj[:, :, 7:14, 7:14, 7:14] = 1
    _, big = aug.zoom(torch.zeros(1, 5, 21, 21, 21), obj, torch.tensor([1.4]), torch.tensor([True]))
    extent = [int(big[0, 0].sum(dim=tuple(i for i in range(3) if i != ax)).gt(0).sum()) for ax in range(3)]
    assert big[0, 0, 10, 10, 10] == 1 and all(9 <= e <= 11 for e in extent)  # 7 voxels x 1.4 = 9.8


def test_device_intensity_steps_leave_targets_and_the_onehot_channel_alone_and_clip_contrast():
    image, target = _batch()
    aug = DeviceNnUNetAugmentation(**{**OFF, "noise_p": 1.0, "blur_p": 1.0, "brightness_p": 1.0, "contrast_p": 1.0})
    out, t = aug(image, target, step=3)
    assert torch.equal(out[:, 4], image[:, 4]) and torch.equal(t, target)
    assert not torch.equal(out[:, :4], image[:, :4])
    contrast_only = DeviceNnUNetAugmentation(**{**OFF, "contrast_p": 1.0, "contrast_range": (3.0, 3.0)})
    out, _ = contrast_only(image, target, step=0)
    for k in range(image.shape[0]):
        assert out[k, :4].min() >= image[k, :4].min() - 1e-6 and out[k, :4].max() <= image[k, :4].max() + 1e-6


def test_device_augmentation_is_seeded_by_step():
    image, target = _batch()
    aug = DeviceNnUNetAugmentation(zoom_p=0.5, noise_p=0.5, seed=2)
    a, b, c = aug(image, target, 7), aug(image, target, 7), aug(image, target, 8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])


def test_uint8_label_maps_encode_to_the_same_regions_on_the_device():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 4, size=(2, 6, 7, 8)).astype(np.uint8)
    on_device = regions_on_device(torch.from_numpy(lab))
    assert torch.equal(on_device, torch.stack([encode_target(x, "regions") for x in lab]))
    assert encode_target(lab[0], "label_map").dtype == torch.uint8


def test_fused_optimisers_only_on_cuda():
    net = torch.nn.Conv3d(1, 1, 1)
    for opt in ("adam", "adamw", "sgd"):
        cfg = TrainConfig(optimizer=opt, fused=True)
        assert not make_optimizer(net.parameters(), cfg, "cpu").defaults.get("fused")
    if torch.cuda.is_available():  # pragma: no cover - on a GPU machine
        assert make_optimizer(net.cuda().parameters(), TrainConfig(fused=True), "cuda").defaults["fused"]


def _tiny_dataset(target):
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(2):
        img = rng.normal(size=(4, 20, 20, 20)).astype(np.float32)
        lab = np.zeros((20, 20, 20), np.uint8)
        lab[6:14, 6:14, 6:14] = 2
        lab[8:12, 8:12, 8:12] = 3
        cases.append((img, lab))
    return PatchDataset(cases, (16, 16, 16), samples_per_epoch=4, fg_prob=0.5, target=target, seed=0)


def _tiny_fit(out, epochs, stop=None, channels_last=True):
    from brats_lib.losses import region_loss

    torch.manual_seed(0)
    model = models.build("unet3d", in_channels=4, out_channels=3, depth=3, filters=[4, 8, 8])
    cfg = TrainConfig(epochs=epochs, batch_size=2, progress=False, channels_last=channels_last)
    return model, fit(model, region_loss(), _tiny_dataset("label_map"), cfg, out, resume=True,
                      batch_transform=DeviceBatch(DeviceNnUNetAugmentation(mri_channels=4, zoom_p=0.5, seed=1)),
                      stop_after_epochs=stop)


def test_fit_with_channels_last_and_device_augmentation_trains_and_resumes_exactly(tmp_path):
    model, res = _tiny_fit(tmp_path / "a", epochs=2)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert np.isfinite(res.log["train_loss"]).all() and len(res.log) == 2
    _tiny_fit(tmp_path / "b", epochs=2, stop=1)
    _tiny_fit(tmp_path / "b", epochs=2)  # resumed: the augmentation is seeded by the global step
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_throughput_variants_run_on_cpu_and_fill_nvidias_table():
    variants = {k: v for k, v in bench_training.THROUGHPUT_VARIANTS.items() if not v["compile"]}
    md = bench_training.run_gpu_throughput("cpu", patch=(16, 16, 16), steps=1, variants=variants,
                                           model_kwargs=dict(in_channels=5, depth=4, filters=[4, 8, 8, 8],
                                                             deep_supervision=True))
    assert "| training |" in md and "| inference |" in md and "27.5" in md
    assert all(f"| {label} |" in md for label in variants)


def test_the_gpu_measurement_script_is_valid_bash_and_names_both_runs():
    script = REPO / "benchmarks" / "gpu.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "--device cuda --only inference training" in text and "benchmarks.full_profiles --device cuda" in text
