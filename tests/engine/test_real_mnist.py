"""A correctness check on real data: a tutorial-sized CNN learns MNIST (not a benchmark)."""

import time

import pytest

from engine.run import run_job
from engine.spec import PretrainSpec


@pytest.mark.slow
def test_simple_cnn_from_scratch_reaches_90_percent_on_real_mnist(real_mnist_root, tmp_path):
    spec = PretrainSpec(
        dataset="mnist",
        model="simple_cnn",
        hyperparameters={"epochs": 2},  # everything else at its default: adam, lr 1e-3, batch 128, cosine
        data={"image_size": 32, "train_samples": 10_000, "test_samples": 1_000},
    )
    started = time.perf_counter()
    result = run_job(
        spec, data_root=real_mnist_root, workdir=tmp_path / "w", checkpoint_dir=tmp_path / "c", device="cpu"
    )
    print(f"real MNIST: {result.evaluation.accuracy:.4f} in {time.perf_counter() - started:.1f} s")
    assert result.evaluation.accuracy >= 0.90
    assert sum(c.support for c in result.evaluation.per_class) == 1_000
