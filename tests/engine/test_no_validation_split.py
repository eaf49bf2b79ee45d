"""data.val_fraction 0 keeps no validation rows ("0 = none"): every strategy still trains, including
those whose frozen prefix's outputs are computed once (the empty validation split among them)."""

import pytest
import torch

from engine.loop import ImageSource, precompute
from engine.numerics import resolve_numerics
from engine.preprocess import InputSpec
from engine.run import run_job
from engine.spec import FinetuneSpec
from tests.engine.training_helpers import DEVICE


@pytest.mark.parametrize("strategy", ["linear", "partial", "lp_ft"])
def test_a_finetune_without_a_validation_split_trains_and_reports_no_val_rows(
    tiny_data_root, tmp_path, source, strategy
):
    spec = FinetuneSpec(
        dataset="mnist",
        strategy=strategy,
        hyperparameters={"epochs": 2, "batch_size": 32},
        data={"image_size": 16, "val_fraction": 0},
    )
    result = run_job(
        spec,
        data_root=tiny_data_root,
        workdir=tmp_path / "work",
        checkpoint_dir=tmp_path / "ckpt",
        source_checkpoint=source.checkpoint.directory,
        source_sha256=source.checkpoint.sha256,
        device=DEVICE,
    )
    assert [m.phase for m in result.epochs] == ["train", "train"]
    assert result.evaluation.accuracy >= 0


def test_precomputing_an_empty_split_keeps_the_prefix_output_shape():
    numerics = resolve_numerics(torch.device("cpu"), "fp32")
    spec = InputSpec(image_size=16, channels=1, mean=(0.5,), std=(0.5,))
    images, labels = torch.zeros(0, 1, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.long)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    cached = precompute(ImageSource(images, labels, spec, False, numerics, conv), 64, lambda: False)
    assert len(cached) == 0 and cached.inputs.shape == (0, 8, 16, 16)
