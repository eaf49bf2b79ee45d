"""Layer probes: a linear classifier on the pooled output of one extractor block (probe_block), its
features capped near 4,096 whatever the block's output size, trained on cached features, and a
checkpoint that predicts like any other."""

from __future__ import annotations

import pytest
import torch

from engine.errors import SpecError
from engine.models import PROBE_MAX_FEATURES, block_names, build_model, probe_grid, probe_model
from engine.predict import Predictor
from engine.run import validate_spec
from engine.spec import FinetuneSpec
from engine.strategies import plan_phases, variant_name
from tests.engine.training_helpers import Recorder, finetune


def test_every_architecture_names_each_of_its_blocks():
    for architecture in ("simple_cnn", "resnet18", "mobilenet_v3_small", "vgg11_bn"):
        assert len(block_names(architecture)) == len(build_model(architecture, 10).blocks)


def test_the_probe_grid_keeps_channels_times_grid_squared_within_the_cap():
    assert probe_grid(64, 24) == 8  # resnet18's stem at 96 px: 64 x 8 x 8 = 4,096
    assert probe_grid(3, 16) == 16  # never pooled up past the feature map itself
    assert probe_grid(8192, 3) == 1  # more channels than the cap: one value a channel
    for channels in (32, 64, 128, 256, 512):
        grid = probe_grid(channels, 1000)
        assert channels * grid * grid <= PROBE_MAX_FEATURES < channels * (grid + 1) ** 2


@pytest.mark.parametrize("architecture", ["simple_cnn", "resnet18"])
def test_each_blocks_probe_reads_at_most_4096_pooled_features(architecture):
    model = build_model(architecture, 10)
    for block in range(len(model.blocks)):
        probe = probe_model(model, block, image_size=96, num_classes=10)
        features = probe.head[0].in_features
        assert features <= PROBE_MAX_FEATURES
        assert probe.extract(torch.zeros(2, 3, 96, 96)).shape == (2, features)
        assert len(probe.blocks) == block + 1


def test_a_probe_block_is_refused_outside_linear_and_past_the_last_block():
    with pytest.raises(SpecError) as not_linear:
        validate_spec(FinetuneSpec(strategy="full", probe_block=0), "simple_cnn")
    assert not_linear.value.field == "probe_block" and "'linear' only" in str(not_linear.value)
    with pytest.raises(SpecError) as too_deep:
        validate_spec(FinetuneSpec(strategy="linear", probe_block=4), "simple_cnn")
    assert too_deep.value.field == "probe_block" and "allowed 0..3" in str(too_deep.value)


def test_a_probe_freezes_every_block_it_keeps_and_is_named_for_its_block():
    phases = plan_phases(FinetuneSpec(strategy="linear", probe_block=1), "simple_cnn")
    assert [(p.name, p.frozen_blocks) for p in phases] == [("linear", 2)]
    assert variant_name("linear", None, probe_block=1) == "probe-1"


def test_a_probe_job_trains_only_its_linear_layer(tiny_data_root, tmp_path, source):
    hooks = Recorder()
    result = finetune(tiny_data_root, tmp_path, source, strategy="linear", probe_block=1, hooks=hooks)
    # simple_cnn's stage2 at 16 px: 64 channels x 4 x 4 = 1,024 features, 10 classes.
    assert result.cost.trainable_parameters == 1024 * 10 + 10
    assert result.checkpoint.meta["probe_block"] == 1
    train_rows = [m for row in hooks.epochs for m in row if m.phase == "train"]
    assert len(train_rows) == 2 and 0 <= result.evaluation.accuracy <= 1


def test_the_random_twin_of_a_probe_starts_from_the_same_weights_at_the_same_seed(
    tiny_data_root, tmp_path, source
):
    first = finetune(tiny_data_root, tmp_path, source, name="a", strategy="linear", probe_block=0,
                     random_init=True)  # fmt: skip
    second = finetune(tiny_data_root, tmp_path, source, name="b", strategy="linear", probe_block=0,
                      random_init=True)  # fmt: skip
    assert first.evaluation.accuracy == second.evaluation.accuracy


def test_a_probe_checkpoint_loads_for_prediction(tiny_data_root, tmp_path, source):
    result = finetune(tiny_data_root, tmp_path, source, strategy="linear", probe_block=2)
    predictor = Predictor.load(result.checkpoint.directory, result.checkpoint.sha256)
    logits = predictor.model(torch.zeros(1, 3, 16, 16))
    assert logits.shape == (1, 10)
