"""Training: finite losses, checkpoints, exact resume, atomic saves and clean stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from facegan.errors import UserError
from facegan.sampling import generate, load_run
from facegan.training import checkpoint as checkpoint_module
from facegan.training.checkpoint import load_checkpoint, save_checkpoint
from facegan.training.loop import train
from tests.conftest import tiny_config


def _stats(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


def test_losses_finite_and_logged(trained_run):
    records = _stats(trained_run)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for record in records:
        for key in ("loss_g", "loss_d", "d_real", "d_fake", "images_per_second"):
            assert torch.isfinite(torch.tensor(record[key])), record


def test_run_folder_contents(trained_run):
    assert (trained_run / "config.json").exists()
    assert json.loads((trained_run / "config.json").read_text())["resolution"] == 32
    assert (trained_run / "samples" / "step-0000004.png").exists()
    assert (trained_run / "samples" / "latest.png").exists()
    assert not list(trained_run.glob(".*.tmp"))


def test_checkpoint_round_trip(trained_run):
    state = load_checkpoint(trained_run / "checkpoint.pt")
    assert state["step"] == 4
    run = load_run(trained_run)
    for name, tensor in run.generator.state_dict().items():
        assert torch.equal(tensor, state["generator_ema"][name]), name
    images = generate(run.generator, state["fixed_latents"][:4])
    assert images.shape == (4, 32, 32, 3)


def test_training_changes_weights(trained_run):
    state = load_checkpoint(trained_run / "checkpoint.pt")
    config = tiny_config()
    torch.manual_seed(config.seed)
    from facegan.models import build_models

    fresh_generator, _ = build_models(config)
    changed = [
        name
        for name, tensor in fresh_generator.state_dict().items()
        if tensor.is_floating_point() and not torch.equal(tensor, state["generator"][name])
    ]
    assert changed


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_continues_exactly(dataset32, tmp_path, precision):
    straight = tmp_path / "straight"
    train(dataset32, straight, tiny_config(steps=6, precision=precision))
    split = tmp_path / "split"
    train(dataset32, split, tiny_config(steps=3, precision=precision))
    train(dataset32, split, tiny_config(steps=6, precision=precision), resume=True)

    a = load_checkpoint(straight / "checkpoint.pt")
    b = load_checkpoint(split / "checkpoint.pt")
    assert b["step"] == 6
    for key in ("generator", "discriminator", "generator_ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name}"
    assert [r["step"] for r in _stats(split)] == list(range(1, 7))
    losses_a = [r["loss_g"] for r in _stats(straight)]
    losses_b = [r["loss_g"] for r in _stats(split)]
    assert losses_a == losses_b


def test_resume_rejects_changed_settings(trained_run):
    with pytest.raises(UserError) as caught:
        train(Path("unused"), trained_run, tiny_config(z_dim=16, g_channels=4), resume=True)
    message = str(caught.value)
    assert "z_dim: 32 -> 16" in message
    assert "g_channels: 8 -> 4" in message


def test_new_run_refuses_existing_folder(dataset32, trained_run):
    with pytest.raises(UserError, match="--resume"):
        train(dataset32, trained_run, tiny_config())


def test_resume_without_checkpoint(dataset32, tmp_path):
    with pytest.raises(UserError, match="no checkpoint"):
        train(dataset32, tmp_path / "empty", tiny_config(), resume=True)


def test_interrupted_save_keeps_last_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 1, "weights": torch.ones(3)}, path)

    def save_half_then_die(state, handle):
        handle.write(b"PK\x03\x04 partial checkpoint bytes")
        raise KeyboardInterrupt  # the process is killed in the middle of writing

    monkeypatch.setattr(checkpoint_module.torch, "save", save_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 2, "weights": torch.zeros(3)}, path)
    monkeypatch.undo()

    state = load_checkpoint(path)
    assert state["step"] == 1
    assert torch.equal(state["weights"], torch.ones(3))


def test_unreadable_checkpoint_message(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="unreadable"):
        load_checkpoint(path)


def test_poisoned_batch_stops_with_message(dataset32, tmp_path):
    with pytest.raises(FloatingPointError, match="non-finite loss_d at step 1"):
        _raise_nan(dataset32, tmp_path)
    assert not (tmp_path / "nan" / "checkpoint.pt").exists()


def _raise_nan(dataset32, tmp_path):
    """Poison the real batch with NaN so the discriminator loss becomes non-finite."""
    from facegan.data import dataset as dataset_module

    original = dataset_module.BatchSampler.next

    def poisoned(self):
        batch = original(self)
        batch[0, 0, 0, 0] = float("nan")
        return batch

    dataset_module.BatchSampler.next = poisoned
    try:
        train(dataset32, tmp_path / "nan", tiny_config(steps=2))
    finally:
        dataset_module.BatchSampler.next = original


def test_sigint_saves_checkpoint(dataset32, tmp_path):
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "facegan", "train", str(dataset32), "--out", str(run_dir),
        "--preset", "test-32", "--steps", "100000", "--checkpoint-every", "100000",
        "--sample-every", "100000", "--log-every", "1",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    stats = run_dir / "stats.jsonl"
    while time.monotonic() < deadline and not (stats.exists() and stats.stat().st_size > 200):
        time.sleep(0.2)
    assert process.poll() is None, process.stderr.read().decode()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode()
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["step"] >= 2
    assert not [name for name in os.listdir(run_dir) if name.endswith(".tmp")]


def test_minutes_limit_applies_per_call(dataset32, tmp_path):
    run_dir = tmp_path / "run"
    first = train(dataset32, run_dir, tiny_config(steps=100000, minutes=0.002))
    assert first.stop_reason == "minutes"
    second = train(dataset32, run_dir, tiny_config(steps=100000, minutes=0.002), resume=True)
    assert second.step > first.step
    assert second.stop_reason == "minutes"


def test_resume_rejects_other_dataset(dataset32, trained_run, tmp_path):
    from PIL import Image

    other = tmp_path / "other"
    other.mkdir()
    for index in range(3):
        Image.new("RGB", (32, 32), (index * 60, 90, 120)).save(other / f"{index}.png")
    with pytest.raises(UserError, match=r"trained on \d+ images from .* has 3"):
        train(other, trained_run, tiny_config(steps=8), resume=True)


def test_second_trainer_on_same_folder_rejected(dataset32, tmp_path):
    import fcntl

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with open(run_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a running trainer keeps this lock
        with pytest.raises(UserError, match="another 'facegan train' is using"):
            train(dataset32, run_dir, tiny_config())
    assert not (run_dir / "checkpoint.pt").exists()


def test_out_that_is_a_file_rejected(dataset32, tmp_path):
    path = tmp_path / "not_a_folder"
    path.write_text("")
    with pytest.raises(UserError, match="is a file"):
        train(dataset32, path, tiny_config())


def test_failed_resume_creates_no_folder(dataset32, tmp_path):
    with pytest.raises(UserError):
        train(dataset32, tmp_path / "missing", tiny_config(), resume=True)
    assert not (tmp_path / "missing").exists()


def test_metrics_logged_during_training(dataset32, tmp_path):
    pytest.importorskip("dlib", reason="dlib (the faces extra) is not installed")
    run_dir = tmp_path / "run"
    train(dataset32, run_dir, tiny_config(steps=2, eval_every=2, eval_count=8))
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["step"] == 2
    assert "fd_dlib" in record
    assert torch.isfinite(torch.tensor(record["fd_dlib"]))
