"""Configuration: presets, overrides, validation messages and --dry-run."""

from __future__ import annotations

import json

import pytest

from facegan.cli import main
from facegan.config import TrainConfig, load_preset, preset_names, resolve_config
from facegan.errors import UserError


def test_presets_ship_and_validate():
    names = preset_names()
    assert "cpu-64" in names
    assert "test-32" in names
    for name in names:
        values, _ = load_preset(name)
        resolve_config(name, {})
        assert "resolution" in values


def test_cpu_preset_is_64():
    assert resolve_config("cpu-64", {}).resolution == 64


def test_override_wins_over_preset():
    config = resolve_config("cpu-64", {"batch_size": 16, "g_lr": 1e-3})
    assert config.batch_size == 16
    assert config.g_lr == 1e-3


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"architecture": "vgg"}, "--architecture 'vgg'; allowed values: dcgan"),
        ({"loss": "mse"}, "--loss 'mse'; allowed values: nonsaturating"),
        ({"precision": "fp16"}, "--precision 'fp16'; allowed values: bf16, fp32"),
        ({"resolution": 48}, "--resolution 48; allowed values: 32, 64"),
        ({"batch_size": 0}, "--batch-size 0"),
        ({"g_lr": -1.0}, "--g-lr -1.0"),
        ({"ema_decay": 1.5}, "--ema-decay 1.5"),
        ({"minutes": -2.0}, "--minutes -2.0"),
    ],
)
def test_invalid_option_named(overrides, expected):
    with pytest.raises(UserError) as caught:
        resolve_config("cpu-64", overrides)
    assert expected in str(caught.value)


def test_unknown_preset_key_rejected(tmp_path):
    preset = tmp_path / "mine.toml"
    preset.write_text("resolution = 32\nlearning_rate = 0.1\n")
    with pytest.raises(UserError, match="unknown option.*learning_rate"):
        resolve_config(str(preset), {})


def test_wrong_type_in_preset_rejected(tmp_path):
    preset = tmp_path / "mine.toml"
    preset.write_text('batch_size = "big"\n')
    with pytest.raises(UserError, match="batch_size"):
        resolve_config(str(preset), {})


def test_unknown_preset_lists_choices():
    with pytest.raises(UserError, match="cpu-64"):
        resolve_config("no-such-preset", {})


def test_cli_unknown_flag_exits(capsys, tmp_path):
    with pytest.raises(SystemExit) as caught:
        main(["train", str(tmp_path), "--out", str(tmp_path / "run"), "--learning-rate", "1"])
    assert caught.value.code == 2
    assert "--learning-rate" in capsys.readouterr().err


def test_cli_invalid_choice_message(capsys, tmp_path):
    code = main(["train", str(tmp_path), "--out", str(tmp_path / "r"), "--loss", "hinge2"])
    assert code == 2
    assert "invalid --loss 'hinge2'; allowed values: nonsaturating" in capsys.readouterr().err


def test_cli_dry_run_prints_config(capsys, tmp_path):
    code = main([
        "train", str(tmp_path), "--out", str(tmp_path / "r"), "--preset", "test-32",
        "--batch-size", "4", "--no-x-flip", "--dry-run",
    ])
    assert code == 0
    output = capsys.readouterr().out
    resolved = json.loads(output[: output.rindex("}") + 1])
    assert resolved["batch_size"] == 4
    assert resolved["x_flip"] is False
    assert resolved["resolution"] == 32
    assert "generator parameters" in output
    assert not (tmp_path / "r").exists()


def test_differences_lists_fields():
    ours = TrainConfig()
    theirs = TrainConfig(z_dim=7, steps=3)
    assert ours.differences(theirs) == ["z_dim: 128 -> 7", "steps: 10000 -> 3"]


def test_cli_unknown_flag_suggests(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["train", str(tmp_path), "--out", str(tmp_path / "run"), "--batchsize", "8"])
    error = capsys.readouterr().err
    assert "--batchsize: did you mean --batch-size" in error
    assert "facegan train --help" in error


@pytest.mark.parametrize("flag", ["minutes", "g_lr", "ema_decay"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_float_rejected(flag, value):
    with pytest.raises(UserError, match="use a finite number"):
        resolve_config("cpu-64", {flag: value})


def test_seed_out_of_range_rejected():
    with pytest.raises(UserError, match="invalid --seed"):
        resolve_config("cpu-64", {"seed": 2**70})
