"""Training techniques: augmentation, improved-GAN tricks, schedules, resume and NaN recovery."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facegan.errors import UserError
from facegan.training import augment
from facegan.training.augment import Augmenter
from facegan.training.checkpoint import load_checkpoint
from facegan.training.ema import ema_decay_with_rampup
from facegan.training.loop import train
from facegan.training.techniques import HistoricalAverage, instance_noise_std
from tests.conftest import tiny_config


@pytest.fixture(autouse=True)
def one_thread():
    """Run on one thread: on a shared machine, competing threads slow torch down sharply."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _stats(run_dir):
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


TECHNIQUES = {
    "feature_matching": {"feature_matching": 1.0},
    "minibatch_std": {"minibatch_std": True},
    "minibatch_discrimination": {"minibatch_discrimination": 4},
    "label_smoothing": {"label_smoothing": 0.1},
    "historical_averaging": {"historical_averaging": 0.01},
    "instance_noise": {"instance_noise": 0.2},
    "diffaugment": {"diffaugment": "color,translation,cutout"},
    "ada": {"diffaugment": "color,translation", "ada_target": 0.6, "ada_kimg": 0.05},
    "spectral_norm": {"spectral_norm": True},
    "schedule": {"d_steps": 2, "accumulate": 2, "d_skip_accuracy": 0.75, "ema_rampup": 0.05},
}


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_technique_trains_on_faces(name, dataset32, tmp_path):
    train(dataset32, tmp_path / name, tiny_config(steps=3, **TECHNIQUES[name]))
    records = _stats(tmp_path / name)
    assert len(records) == 3
    for record in records:
        for key, value in record.items():
            assert np.isfinite(value), (key, record)
    if name == "feature_matching":
        assert all(r["feature_matching"] > 0 for r in records)
    if name == "schedule":
        # Two D updates of two accumulated batches of 8 per step.
        assert records[-1]["kimg"] == pytest.approx(3 * 2 * 2 * 8 / 1000)


def test_augment_probability_zero_is_identity():
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    for operation in augment.OPERATIONS.values():
        assert torch.equal(operation(images, 0.0), images)


def test_augment_keeps_gradients_and_shape():
    images = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_(True)
    augmenter = Augmenter(["color", "translation", "cutout"], 0.0, 100.0, 4, 4)
    out = augmenter(images)
    assert out.shape == images.shape
    assert not torch.equal(out, images)
    out.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_translation_of_bf16_batches_finite():
    torch.manual_seed(0)
    for _ in range(10):
        images = (torch.rand(32, 3, 128, 128) * 2 - 1).to(torch.bfloat16)
        shifted = augment.translation(images.contiguous(memory_format=torch.channels_last), 1.0)
        assert shifted.dtype == torch.bfloat16
        assert torch.isfinite(shifted).all()


def test_cutout_zeroes_quarter_of_pixels():
    images = torch.ones(3, 3, 16, 16)
    out = augment.cutout(images, 1.0)
    assert torch.equal((out == 0).float().mean(dim=(1, 2, 3)), torch.full((3,), 0.25))


def test_ada_probability_follows_overfitting_sign():
    # Each update moves p by ada_interval * batch_size / (ada_kimg * 1000) = 16 / 64.
    augmenter = Augmenter(["color"], ada_target=0.6, ada_kimg=0.064, ada_interval=2,
                          batch_size=8)
    assert augmenter.p == 0.0
    for _ in range(4):
        augmenter.observe(torch.ones(8))  # D sure about every real: r_t = 1 > 0.6
    assert augmenter.p == pytest.approx(0.5)
    for _ in range(20):
        augmenter.observe(-torch.ones(8))  # r_t = -1 < 0.6
    assert augmenter.p == 0.0


def test_historical_average_is_running_mean():
    layer = torch.nn.Linear(1, 1, bias=False)
    history = HistoricalAverage(layer)
    values = [1.0, 2.0, 6.0]
    with torch.no_grad():
        layer.weight.fill_(values[0])
    history = HistoricalAverage(layer)
    for value in values[1:]:
        with torch.no_grad():
            layer.weight.fill_(value)
        history.update(layer)
    assert history.averages[0].item() == pytest.approx(3.0)
    with torch.no_grad():
        layer.weight.fill_(5.0)
    assert history.penalty(layer).item() == pytest.approx(4.0)


def test_instance_noise_fades_linearly():
    assert instance_noise_std(0.2, 100, 0) == pytest.approx(0.2)
    assert instance_noise_std(0.2, 100, 50) == pytest.approx(0.1)
    assert instance_noise_std(0.2, 100, 500) == 0.0


def test_ema_rampup_caps_half_life():
    assert ema_decay_with_rampup(0.999, 0.0, 64, 10) == 0.999
    early = ema_decay_with_rampup(0.999, 0.05, 64, 6400)
    # Half-life capped at 0.05 * 6400 = 320 images, so 5 steps of 64.
    assert early == pytest.approx(0.5 ** (1 / 5))
    assert ema_decay_with_rampup(0.999, 0.05, 64, 10**9) == pytest.approx(0.999)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"diffaugment": "color,blur"}, "--diffaugment operation 'blur'"),
        ({"ada_target": 0.6}, "--ada-target needs --diffaugment"),
        ({"label_smoothing": 0.1, "loss": "hinge"}, "label smoothing needs one of"),
        ({"progressive": True, "architecture": "stylegan"}, "progressive growing needs"),
        ({"minibatch_discrimination": 4, "architecture": "projected"}, "projected"),
        ({"nan_lr_factor": 0.0}, "--nan-lr-factor 0.0"),
        ({"r1_every": 0}, "--r1-every 0"),
        ({"device": "tpu"}, "--device 'tpu'; allowed values: cpu, cuda"),
    ],
)
def test_invalid_technique_named(overrides, expected):
    with pytest.raises(UserError) as caught:
        tiny_config(**overrides)
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    "overrides",
    [
        {"architecture": "stylegan", "diffaugment": "color,translation,cutout",
         "ada_target": 0.6, "ada_kimg": 0.02, "r1_gamma": 1.0, "r1_every": 2},
        {"historical_averaging": 0.01, "instance_noise": 0.1, "progressive": True,
         "progressive_kimg": 0.01},
    ],
)
def test_resume_exact_with_new_state(overrides, dataset32, tmp_path):
    config = dict(steps=6, precision="fp32", **overrides)
    train(dataset32, tmp_path / "straight", tiny_config(**config))
    train(dataset32, tmp_path / "split", tiny_config(**{**config, "steps": 3}))
    train(dataset32, tmp_path / "split", tiny_config(**config), resume=True)
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    for key in ("generator", "discriminator", "generator_ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name}"
    assert a["augment"] == b["augment"]
    if a["historical_average"] is not None:
        for x, y in zip(a["historical_average"]["g"]["averages"],
                        b["historical_average"]["g"]["averages"]):
            assert torch.equal(x, y)
    assert [r["loss_g"] for r in _stats(tmp_path / "straight")] == [
        r["loss_g"] for r in _stats(tmp_path / "split")
    ]


def _poison_batches(monkeypatch, calls_to_poison: set[int]):
    """Put NaN into the real batches whose call numbers (from 1) are in ``calls_to_poison``."""
    from facegan.data import dataset as dataset_module

    original = dataset_module.BatchSampler.next
    calls = {"count": 0}

    def poisoned(self):
        batch = original(self)
        calls["count"] += 1
        if calls["count"] in calls_to_poison:
            batch[0, 0, 0, 0] = float("nan")
        return batch

    monkeypatch.setattr(dataset_module.BatchSampler, "next", poisoned)


def test_nan_rolls_back_and_recovers(dataset32, tmp_path, monkeypatch, caplog):
    _poison_batches(monkeypatch, {4})  # the batch of step 4; the last checkpoint is step 2
    config = tiny_config(steps=5, checkpoint_every=2, log_every=1, nan_lr_factor=0.5)
    result = train(dataset32, tmp_path / "run", config)
    assert result.step == 5
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["recovery"] == {"rollbacks": 1, "lr_scale": 0.5}
    assert state["g_optimizer"]["param_groups"][0]["lr"] == pytest.approx(config.g_lr * 0.5)
    assert "non-finite loss_d at step 4" in caplog.text
    assert "rolled back to step 2" in caplog.text
    records = _stats(tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5], "replayed steps logged once"
    assert all(np.isfinite(r["loss_d"]) for r in records)


def test_absurd_learning_rate_recovers(dataset32, tmp_path, monkeypatch):
    """Weights pushed to inf by a huge step are rolled back and training goes on."""
    from facegan.training import steps as steps_module

    original = steps_module.generator_update
    calls = {"count": 0}

    def exploding(trainer):
        values = original(trainer)
        calls["count"] += 1
        if calls["count"] == 2:
            with torch.no_grad():
                for p in trainer.generator.parameters():
                    p.mul_(float("inf"))  # what an absurd learning rate does to the weights
        return values

    monkeypatch.setattr(steps_module, "generator_update", exploding)
    result = train(dataset32, tmp_path / "run", tiny_config(steps=4, checkpoint_every=1))
    assert result.step == 4
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["recovery"]["rollbacks"] == 1
    assert all(torch.isfinite(t).all() for t in state["generator"].values()
               if t.is_floating_point())


def test_nan_stops_when_retries_run_out(dataset32, tmp_path, monkeypatch):
    _poison_batches(monkeypatch, set(range(1, 100)))
    with pytest.raises(FloatingPointError) as caught:
        train(dataset32, tmp_path / "run", tiny_config(steps=3, nan_retries=2))
    message = str(caught.value)
    assert "non-finite loss_d at step 1" in message
    assert "stopped after 2 rollback(s)" in message
    assert "--nan-retries 2" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on CPU-only machines")
def test_cuda_preset_without_gpu_named(tmp_path):
    from facegan.config import resolve_config
    from facegan.training.loop import Trainer

    config = resolve_config("faces-256", {})
    images = torch.zeros(1, 3, 256, 256, dtype=torch.uint8)
    with pytest.raises(UserError, match="invalid --device cuda"):
        Trainer(config, images, tmp_path)
