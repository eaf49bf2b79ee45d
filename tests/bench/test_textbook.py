"""Smoke tests of the benchmarks on the tiny data fixture: the textbook baseline and the engine run side
by side, on the same rows, and the comparison prints its table. Numbers here mean nothing (toy sizes)."""

import shutil

import pytest

from bench import finetune_throughput, pretrain_throughput, seed_study
from bench.common import MNIST_FILES, unpack_mnist

TINY = ["--model", "simple_cnn", "--device", "cpu", "--textbook-workers", "1", "--in-process"]


@pytest.fixture(scope="module")
def data_root(tiny_data_root, tmp_path_factory):
    """A private copy of the tiny data: the benchmarks add torchvision's unpacked MNIST beside the .gz."""
    root = tmp_path_factory.mktemp("bench-data")
    shutil.copytree(
        tiny_data_root, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".transferlab-cache")
    )
    return root


def test_unpack_mnist_leaves_the_decompressed_files_torchvision_reads(data_root):
    unpack_mnist(data_root)
    assert all((data_root / "MNIST/raw" / name).is_file() for name in MNIST_FILES)


def test_finetune_comparison_runs_every_strategy_on_both_sides_and_prints_the_table(data_root, capsys):
    report = finetune_throughput.main(
        ["--data-root", str(data_root), "--image-size", "16", "--epochs", "2", *TINY]
        + ["--train-samples", "100", "--test-samples", "50", "--pretrain-samples", "100"]
    )
    out = capsys.readouterr().out
    medians = {(m["task"], m["side"]): m for m in report["medians"]}
    assert set(medians) == {(s, side) for s in ("linear", "partial", "full") for side in ("ours", "textbook")}
    for strategy in ("linear", "partial", "full"):
        ours, textbook = medians[(strategy, "ours")], medians[(strategy, "textbook")]
        assert ours["train_rows"] == textbook["train_rows"] == 90  # same rows: 100 less the 10% hold-out
        assert ours["images_per_second"] > 0 and textbook["images_per_second"] > 0
        assert 0 <= textbook["test_accuracy"] <= 1
    assert [row[0] for row in report["summary"]] == ["linear", "partial", "full"]
    assert all(row[-1] in ("PASS", "FAIL") for row in report["summary"])
    assert out.count("| textbook |") == 3 and "img/s ours/textbook" in out


def test_pretrain_comparison_runs_both_sides_with_augmentation(data_root, capsys):
    report = pretrain_throughput.main(
        ["--data-root", str(data_root), "--image-size", "32", "--epochs", "1", *TINY]
    )
    assert [m["side"] for m in report["medians"]] == ["ours", "textbook"]
    assert report["medians"][0]["train_rows"] == report["medians"][1]["train_rows"] == 90
    assert "| pretrain | textbook |" in capsys.readouterr().out


def test_seed_study_runs_all_four_jobs_and_reports_the_targets(data_root):
    result = seed_study.main(
        ["--data-root", str(data_root), "--device", "cpu", "--model", "simple_cnn", "--image-size", "16"]
        + ["--pretrain-epochs", "1", "--epochs", "1,1,1", "--batch-size", "32"]
    )
    assert [j["job"] for j in result["jobs"]] == ["pretrain", "linear", "partial", "full"]
    assert result["wall_seconds"] >= result["train_seconds"] > 0
    assert isinstance(result["wall_pass"], bool) and isinstance(result["accuracy_pass"], bool)
