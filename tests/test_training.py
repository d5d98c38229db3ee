import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from brats_lib import models
from brats_lib.losses import DeepSupervision, region_loss
from brats_lib.phantoms import make_phantom
from brats_lib.preprocess import zscore
from brats_lib.sampling import PatchDataset
from brats_lib.training import TrainConfig, Trainer, fit, load_checkpoint, lr_curve


def _data(n=2, seed=0):
    cases = []
    for s in range(n):
        img, lab, _ = make_phantom(s, (32, 32, 32), kind="gbm")
        cases.append((zscore(img), lab))
    return PatchDataset(cases, (16, 16, 16), samples_per_epoch=4, fg_prob=0.7, seed=seed)


def _model():
    torch.manual_seed(0)
    return models.build("unet3d", depth=3, filters=[4, 8, 8], deep_supervision=True, deep_supervision_heads=1, dropout=0.1)


def test_schedules():
    base = dict(epochs=10, lr=1.0)
    warm = lr_curve(TrainConfig(**base, schedule="cosine", warmup_epochs=2), 5)
    assert warm[0] == pytest.approx(0.1) and warm[9] == pytest.approx(1.0) and warm[-1] < 0.01
    assert np.all(np.diff(warm[10:]) <= 1e-12)
    poly = lr_curve(TrainConfig(**base, schedule="poly", poly_power=0.9), 1)
    assert poly[5] == pytest.approx((1 - 0.5) ** 0.9)
    step = lr_curve(TrainConfig(**base, schedule="step", step_epochs=3, step_gamma=0.5), 2)
    assert step[5] == 1.0 and step[6] == 0.5 and step[12] == 0.25
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")


def test_training_lowers_the_loss_and_logs(tmp_path):
    cfg = TrainConfig(epochs=6, batch_size=2, lr=3e-3, val_every=2, progress=False, keep_best=2,
                      best_metric="score")
    calls = []

    def val(model):
        calls.append(1)
        return {"score": float(len(calls))}

    res = fit(_model(), DeepSupervision(region_loss(), (1.0, 0.5)), _data(), cfg, tmp_path, val_fn=val)
    log = res.log
    assert list(log["epoch"]) == list(range(1, 7)) and len(calls) == 3
    assert log["train_loss"].iloc[-2:].mean() < log["train_loss"].iloc[:2].mean()
    assert (tmp_path / "log.csv").exists() and (tmp_path / "last.pt").exists()
    assert [e for _, e, _ in res.best] == [6, 4] and len(list(tmp_path.glob("best-*.pt"))) == 2
    ck = load_checkpoint(tmp_path / "last.pt")  # weights_only=True must be able to read it
    assert ck["epoch"] == 6 and "val_score" in log.columns


def test_resume_gives_identical_weights(tmp_path):
    cfg = TrainConfig(epochs=4, batch_size=2, lr=2e-3, schedule="cosine", warmup_epochs=1, progress=False)
    loss = DeepSupervision(region_loss(), (1.0, 0.5))
    a = fit(_model(), loss, _data(), cfg, tmp_path / "a")
    part = fit(_model(), loss, _data(), cfg, tmp_path / "b", stop_after_epochs=2)
    assert len(part.log) == 2
    b = fit(_model(), loss, _data(), cfg, tmp_path / "b")  # a new process would build a fresh model too
    wa, wb = load_checkpoint(tmp_path / "a" / "last.pt")["model"], load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert np.allclose(a.log["train_loss"], b.log["train_loss"])


def test_stop_hook_ends_a_run_and_the_parts_resume_it_exactly(tmp_path):
    """A stop hook ends training after the epoch it says so (the curriculum's stages);
    the run resumed part by part (Trainer: resume, train_epoch, validate, save) ends with
    the weights of an uninterrupted run."""
    cfg = TrainConfig(epochs=4, batch_size=2, lr=2e-3, schedule="step", step_epochs=1, progress=False)
    loss = DeepSupervision(region_loss(), (1.0, 0.5))
    whole = fit(_model(), loss, _data(), cfg, tmp_path / "whole")
    seen = []
    part = fit(_model(), loss, _data(), cfg, tmp_path / "parts", stop=lambda rows: seen.append(len(rows)) or len(rows) == 3)
    assert seen == [1, 2, 3] and list(part.log["epoch"]) == [1, 2, 3]
    assert load_checkpoint(tmp_path / "parts" / "last.pt")["epoch"] == 3
    trainer = Trainer(_model(), loss, _data(), cfg, tmp_path / "parts")
    assert trainer.resume() and trainer.epoch == 3 and trainer.step == 3 * trainer.steps_per_epoch
    row = trainer.train_epoch()
    trainer.validate(row)  # no val_fn: nothing added
    trainer.rows.append(row)
    trainer.epoch += 1
    trainer.save()
    assert set(row) == {"epoch", "step", "lr", "train_loss", "time_s", "data_wait_s"} and row["epoch"] == 4
    wa = load_checkpoint(tmp_path / "whole" / "last.pt")["model"]
    wb = load_checkpoint(tmp_path / "parts" / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert row["train_loss"] == pytest.approx(float(whole.log["train_loss"].iloc[-1]), rel=1e-6)
    assert row["lr"] == pytest.approx(float(whole.log["lr"].iloc[-1])) == pytest.approx(2e-3 * 0.5 ** 4)  # after its last step


def test_worker_processes_see_every_epoch(tmp_path):
    """Loading in worker processes trains on the same samples as loading in-process: each
    epoch's workers must see that epoch (persistent workers would replay epoch 0)."""
    cfg = dict(epochs=3, batch_size=2, lr=2e-3, progress=False)
    loss = DeepSupervision(region_loss(), (1.0, 0.5))
    fit(_model(), loss, _data(), TrainConfig(**cfg), tmp_path / "a")
    fit(_model(), loss, _data(), TrainConfig(**cfg, num_workers=2), tmp_path / "b")
    wa, wb = load_checkpoint(tmp_path / "a" / "last.pt")["model"], load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, torch, torch.distributed as dist
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_training import _data, _model
        from brats_lib.losses import DeepSupervision, region_loss
        from brats_lib.training import TrainConfig, fit
        cfg = TrainConfig(epochs=2, batch_size=1, lr=1e-3, progress=False)
        model = _model()
        res = fit(model, DeepSupervision(region_loss(), (1.0, 0.5)), _data(), cfg, {str(tmp_path / 'out')!r})
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        torch.save(flat, {str(tmp_path)!r} + f"/rank{{dist.get_rank()}}.pt")
        assert dist.get_world_size() == 2
        dist.destroy_process_group()
    """))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
                        str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    w0, w1 = torch.load(tmp_path / "rank0.pt", weights_only=True), torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert torch.equal(w0, w1)  # DDP keeps replicas identical
    assert (tmp_path / "out" / "last.pt").exists()


def test_precision_follows_amp_and_the_hardware(monkeypatch):
    from brats_lib import precision

    assert precision.autocast_dtype("cuda", True) == torch.float16
    assert precision.autocast_dtype("cuda", False) is None and precision.autocast_dtype("cpu", False) is None
    assert precision.needs_grad_scaler("cuda") and not precision.needs_grad_scaler("cpu")
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    assert precision.autocast_dtype("cpu", True) is None and precision.precision_name("cpu") == "float32"
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    assert precision.autocast_dtype("cpu", True) == torch.bfloat16
    assert precision.precision_name("cpu") == "bfloat16 autocast"


@pytest.mark.skipif(not __import__("brats_lib.precision").precision.cpu_supports_bf16(),
                    reason="this CPU has no bfloat16 instructions")
@pytest.mark.parametrize("amp", [True, False])
def test_fit_trains_in_bfloat16_on_this_cpu_unless_amp_is_off(tmp_path, amp):
    seen = []
    model = _model()
    model.register_forward_hook(lambda m, i, o: seen.append((o[0] if isinstance(o, (list, tuple)) else o).dtype))
    cfg = TrainConfig(epochs=1, batch_size=2, lr=1e-3, progress=False, amp=amp)
    fit(model, DeepSupervision(region_loss(), (1.0, 0.5)), _data(), cfg, tmp_path)
    assert set(seen) == {torch.bfloat16 if amp else torch.float32}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay float32


@pytest.mark.skipif(not __import__("brats_lib.precision").precision.cpu_supports_bf16(),
                    reason="this CPU has no bfloat16 instructions")
def test_tiny_convolutions_run_in_float32_under_bfloat16():
    """oneDNN's bf16 weight gradient of a 3x3x3 conv on a 2x2x2 map is sometimes NaN; the guard
    runs such convolutions in float32 and leaves the others, and the weights' keys, alone."""
    from brats_lib.precision import guard_tiny_convolutions

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(8, 8, 3, padding=1), torch.nn.ConvTranspose3d(8, 8, 2, stride=2))
    keys = list(net.state_dict())
    guard_tiny_convolutions(net, "cpu", amp=True)
    assert list(net.state_dict()) == keys and isinstance(net[0], torch.nn.Conv3d)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert net[0](torch.randn(1, 8, 2, 2, 2)).dtype == torch.float32
        assert net[0](torch.randn(1, 8, 4, 4, 4)).dtype == torch.bfloat16
        assert net[1](torch.randn(1, 8, 2, 2, 2)).dtype == torch.float32
    bad = 0
    for _ in range(30):
        conv = guard_tiny_convolutions(torch.nn.Sequential(torch.nn.Conv3d(64, 64, 3, padding=1, bias=False)), "cpu")[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(torch.randn(2, 64, 2, 2, 2))
        (y.float() ** 2).mean().backward()
        bad += int(not torch.isfinite(conv.weight.grad).all())
    assert bad == 0
    plain = torch.nn.Sequential(torch.nn.Conv3d(8, 8, 3, padding=1))
    assert type(guard_tiny_convolutions(plain, "cpu", amp=False)[0]) is torch.nn.Conv3d  # float32: untouched


def test_channels_last_reorders_a_3d_network_ndhwc_and_a_2d_one_nhwc(tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=2, progress=False, channels_last=True)
    net3d = _model()
    fit(net3d, DeepSupervision(region_loss(), (1.0, 0.5)), _data(), cfg, tmp_path / "3d")
    conv3d = next(m for m in net3d.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv3d.weight.is_contiguous(memory_format=torch.channels_last_3d) and not conv3d.weight.is_contiguous()

    class Slices(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return torch.randn(4, 16, 16, generator=g), (torch.rand(3, 16, 16, generator=g) > 0.5).float()

    def train_2d(channels_last: bool, out):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 1))
        seen = []
        net[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous(memory_format=torch.channels_last)
                                                                  and not a[0].is_contiguous()))
        c = TrainConfig(epochs=1, batch_size=2, progress=False, channels_last=channels_last, amp=False)
        res = fit(net, torch.nn.BCEWithLogitsLoss(), Slices(), c, out)
        return net, seen, res

    net2d, seen, res = train_2d(True, tmp_path / "2d")
    assert net2d[0].weight.is_contiguous(memory_format=torch.channels_last) and not net2d[0].weight.is_contiguous()
    assert seen and all(seen)  # the inputs reach the network as NHWC
    plain, seen_plain, _ = train_2d(False, tmp_path / "2d-plain")
    assert not any(seen_plain) and plain[0].weight.is_contiguous()
    # a layout, not a model change: the same weights after the same steps (float32)
    for a, b in zip(net2d.parameters(), plain.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
    assert np.isfinite(res.log["train_loss"]).all()
