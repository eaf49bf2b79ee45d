"""Precision and memory format: bf16 autocast and channels-last, run on the CPU so that the code the
GPU takes by default is exercised in every test run."""

from __future__ import annotations

import pytest
import torch

from engine.errors import JobCancelled
from engine.loop import ImageSource
from engine.numerics import resolve_numerics
from engine.preprocess import InputSpec
from engine.spec import Precision
from tests.engine.training_helpers import Recorder, finetune, weights

CPU = torch.device("cpu")


@pytest.mark.parametrize("precision,expected", [("auto", "fp32"), ("fp32", "fp32"), ("bf16", "bf16")])
def test_auto_is_fp32_on_the_cpu_and_bf16_can_be_asked_for(precision, expected):
    numerics = resolve_numerics(CPU, Precision(precision))
    assert numerics.precision == expected
    with numerics.autocast():
        y = torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
    assert y.dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)


def test_image_batches_come_out_channels_last():
    images = torch.randint(0, 256, (6, 1, 20, 20), dtype=torch.uint8)
    spec = InputSpec(image_size=16, channels=1, mean=(0.5,), std=(0.5,))
    source = ImageSource(images, torch.arange(6), spec, False, resolve_numerics(CPU, "fp32"))
    x, _ = source.batch(torch.arange(4), None)
    assert x.shape == (4, 3, 16, 16)
    assert x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("strategy", ["linear", "partial", "full"])
def test_bf16_trains_every_strategy_and_keeps_fp32_weights(tiny_data_root, tmp_path, source, strategy):
    hooks = Recorder()
    result = finetune(
        tiny_data_root,
        tmp_path,
        source,
        hooks=hooks,
        strategy=strategy,
        hyperparameters={"precision": "bf16"},
    )
    assert hooks.starts[0].precision == result.precision == "bf16"
    assert result.checkpoint.meta["precision"] == "bf16"
    assert all(t.dtype == torch.float32 for k, t in weights(result).items() if "num_batches" not in k)
    assert all(m.loss == m.loss for m in result.epochs)  # no NaN
    assert 0.0 <= result.evaluation.accuracy <= 1.0


def test_bf16_cached_features_give_what_the_frozen_extractor_gives(tiny_data_root, tmp_path, source):
    bf16 = {"precision": "bf16"}
    cached = finetune(tiny_data_root, tmp_path, source, "cached", strategy="linear", hyperparameters=bf16)
    through = finetune(
        tiny_data_root, tmp_path, source, "through", strategy="linear", cache_bytes=0, hyperparameters=bf16
    )
    a, b = weights(cached), weights(through)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-4)
    assert cached.evaluation.accuracy == through.evaluation.accuracy


def test_a_state_saved_in_one_arithmetic_is_not_resumed_in_the_other(
    tiny_data_root, tmp_path, source, monkeypatch
):
    # "auto" is fp32 here and bf16 on a GPU: a job re-queued from one kind of worker to the other
    # starts over instead of continuing the other arithmetic's state.
    cut = Recorder(stop_after_batches=4)
    with pytest.raises(JobCancelled):
        finetune(tiny_data_root, tmp_path, source, name="job", hooks=cut, hyperparameters={"epochs": 3})
    assert len(cut.epochs) >= 1
    as_on_a_gpu = lambda device, precision: resolve_numerics(device, Precision.bf16)  # noqa: E731
    monkeypatch.setattr("engine.job_numerics.resolve_numerics", as_on_a_gpu)
    again = Recorder()
    finetune(tiny_data_root, tmp_path, source, name="job", hooks=again, hyperparameters={"epochs": 3})
    assert again.starts[0].resumed_from_epoch == 0 and again.starts[0].precision == "bf16"
