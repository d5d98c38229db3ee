"""The benchmark code paths at tiny size (the timings themselves live in benchmarks/)."""
import numpy as np
import pytest
import torch

from benchmarks import bench_inference, bench_metrics, bench_training
from benchmarks.common import PeakRSS, cpu_model
from brats_lib import inference as I
from brats_lib import models
from brats_lib.phantoms import make_phantom
from brats_lib.training import TrainConfig


def test_reference_and_ours_segment_alike():
    image, _, _ = make_phantom(0, (40, 40, 40))
    model = cpu_model()
    ref = bench_inference.reference(model, image, (32, 32, 32), "cpu")
    with PeakRSS() as mem:
        _, ours = I.predict_case(model, image, (32, 32, 32), tta=8)
    assert mem.gib > 0.05 and ref.shape == ours.shape
    # the same network, flips and blending; they differ where window borders fall, which an
    # InstanceNorm network feels (window statistics), most of all untrained, as here
    assert bench_inference.mean_abs_difference(ref, ours, image) < 0.1


def test_training_benchmark_paths_run():
    ds = bench_training._dataset((16, 16, 16), 4)
    cfg = TrainConfig(epochs=1, batch_size=2, progress=False)
    assert bench_training.bare_loop(ds, cfg, "cpu") > 0
    wall, wait = bench_training.ours(ds, cfg, "cpu")
    assert wall > 0 and 0 <= wait < 1


def test_throughput_in_nvidia_format_runs_on_cpu():
    net = models.build("unet3d", in_channels=5, depth=4, filters=[4, 8, 8, 8], deep_supervision=True)
    res = bench_training.throughput(net, 1, (16, 16, 16), "cpu", amp=True, steps=2, warmup=1)
    assert res["training"] > 0 and res["inference"] > 0
    assert bench_training.model_in_channels(net) == 5


def test_metrics_scaling_table_at_tiny_size():
    pytest.importorskip("medpy")
    pytest.importorskip("surface_distance")
    md = bench_metrics.run_scaling([(24, 24, 24)])
    row = [line for line in md.splitlines() if line.startswith("| 24x24x24")]
    assert len(row) == 1 and row[0].count("x |") == 2


def test_only_reruns_one_section_and_keeps_the_others():
    from benchmarks.report import merge, split_sections

    earlier = ("# Benchmarks\n\nRun then.\n\n## Metrics: a\n\nold metrics\n\n## Training: b\n\nold training\n\n"
               "## GPU\n\nnot measured\n\nTotal benchmark time 9 s; all targets met: yes.\n")
    assert set(split_sections(earlier)) == {"metrics", "training"}
    sections, ok = merge({"training": ("## Training: b\n\nnew training", False)}, earlier, "now")
    assert sections[0] == "## Metrics: a\n\nold metrics" and "new training" in sections[1]
    assert "Re-run now" in sections[1] and not ok
    assert sections[1].endswith("Targets in this section met: NO.")
    fresh, ok = merge({"metrics": ("## Metrics: a\n\nm", True)}, None, "now")
    assert fresh == ["## Metrics: a\n\nm\n\nTargets in this section met: yes."] and ok


def test_a_kept_section_counts_with_its_own_verdict():
    from benchmarks.report import merge

    earlier = ("# B\n\n## Metrics: a\n\nm\n\nTargets in this section met: yes.\n\n"
               "## Inference: i\n\n| size | target met |\n| --- | --- |\n| 64^3 | yes |\n\n"
               "## Training: b\n\nold\n\nTargets in this section met: NO.\n\n"
               "Total benchmark time 9 s; all targets met: NO.\n")
    assert merge({"training": ("## Training: b\n\nnew", True)}, earlier, "now")[1]
    assert not merge({"metrics": ("## Metrics: a\n\nm", True)}, earlier, "now")[1]
    bad_inference = earlier.replace("| 64^3 | yes |", "| 64^3 | NO |")
    assert not merge({"training": ("## Training: b\n\nnew", True)}, bad_inference, "now")[1]


def test_full_profile_memory_estimate_counts_weights_optimiser_and_saved_activations():
    import torch.nn as nn

    from benchmarks import full_profiles as FP

    n, est = FP.estimated_step_bytes(lambda: nn.Sequential(nn.Conv3d(1, 2, 3, padding=1, bias=False), nn.ReLU()),
                                     (1, 1, 4, 4, 4))
    # 54 weights x 4 copies x 4 bytes + the conv's saved input (64 floats) + the ReLU's output (128 floats)
    assert (n, est) == (54, 16 * 54 + 4 * 64 + 4 * 128)


def test_full_profile_plan_builds_every_notebook_model_on_meta():
    from benchmarks import full_profiles as FP

    for label, make in FP.NOTEBOOKS.items():
        build, shape, steps, how = make()
        n, est = FP.estimated_step_bytes(build, shape)
        assert n > 1e6 and est > 16 * n and (steps is None or steps > 0) and how, label


def test_precision_section_is_kept_apart_from_the_training_section():
    from benchmarks.report import merge, split_sections

    earlier = ("# B\n\n## Training: the loop\n\nold training\n\nTargets in this section met: yes.\n\n"
               "## Training precision: float32 vs bfloat16 autocast\n\n| bf16 training step vs fp32 | **2.50x** |\n\n"
               "Targets in this section met: yes.\n\nTotal benchmark time 9 s; all targets met: yes.\n")
    parts = split_sections(earlier)
    assert "old training" in parts["training"] and "bf16" not in parts["training"]
    assert "**2.50x**" in parts["precision"]
    sections, ok = merge({"precision": ("## Training precision: x\n\nnew", False)}, earlier, "now")
    assert ok is False and "old training" in sections[0] and "new" in sections[1]


def test_precision_benchmark_runs_at_toy_size():
    from brats_lib.precision import cpu_supports_bf16

    md, _ = bench_training.run_precision("cpu", patches=((16, 16, 16),), repeats=1, steps=1, train_steps=4)
    assert md.startswith("## Training precision")
    if cpu_supports_bf16():
        assert "bf16 training step vs fp32, 16x16x16" in md and "| bfloat16 autocast | 4 |" in md


def test_layout_benchmark_times_both_layouts_and_judges_the_profiles_choice():
    import dataclasses

    from benchmarks import bench_layout
    from brats_lib.app import profiles

    entries = {e.label: e for e in bench_layout._entries()}
    # every comparison method has a row, built from its own paper's profile
    assert {e.method for e in entries.values()} == {"3D U-Net", "HNF-Netv2", "MTDS attention R2U-Net", "Optimized U-Net",
                                                    "OM-Net + CGA", "Cross-modality fusion"}
    p = dataclasses.replace(profiles.load("hnfnetv2", "test"), patch_size=[16, 16, 16], batch_size=1)
    t = bench_layout.time_layouts(entries["3D U-Net"], p, repeats=2, steps=1)
    assert t["contiguous ms"] > 0 and t["channels-last ms"] > 0
    assert t["ratio"] == pytest.approx(t["contiguous ms"] / t["channels-last ms"])
    mtds = dataclasses.replace(profiles.load("attention_r2unet_mtds", "test"), crop=[16, 16], batch_size=2)
    assert bench_layout.time_layouts(entries["MTDS attention R2U-Net"], mtds, repeats=2, steps=1)["ratio"] > 0
    assert bench_layout.verdict(1.3, True) == ("channels-last", True)
    assert bench_layout.verdict(1.3, False) == ("channels-last", False)
    assert bench_layout.verdict(0.8, False) == ("contiguous", True) and not bench_layout.verdict(0.8, True)[1]
    assert bench_layout.verdict(1.02, False)[1] and bench_layout.verdict(0.97, True)[1]


def test_augmentation_benchmark_compares_identical_outputs_at_tiny_size():
    from benchmarks import bench_data

    rows, same = bench_data.augmentation_rows(patch=12, n=3)
    assert same and len(rows) == 3
    assert rows[1][2].startswith("**") and rows[1][2].endswith("x**") and rows[1][3] == "yes"


def test_workers_benchmark_judges_the_comparison_profiles_choice():
    from benchmarks import bench_workers

    assert bench_workers.verdict(1.4, True) == ("pool", True)
    assert bench_workers.verdict(1.4, False) == ("pool", False)
    assert bench_workers.verdict(0.7, False) == ("one after another", True)
    assert not bench_workers.verdict(0.7, True)[1]
    assert bench_workers.verdict(1.03, False)[1] and bench_workers.verdict(0.98, True)[1]
    # every method the comparison trains has its short setting, and every short setting is a key of its profile
    from brats_lib import comparison as C
    from brats_lib.app import profiles

    cp = profiles.load("comparison", "cpu")
    assert set(bench_workers.SHORT) == set(cp.methods)
    shared = profiles.as_dict(cp)
    for m, short in bench_workers.SHORT.items():
        C.method_params(C.METHODS[m], "cpu", shared, short)
