"""Training, strategies, optimisers, schedules, resume and cost accounting on tiny real-format files."""

import pytest
import torch

from engine.errors import JobCancelled, SpecError
from engine.models import build_model
from engine.predict import Predictor
from engine.run import run_job, validate_finetune
from engine.spec import FinetuneSpec, OptimizerName, PretrainSpec, SchedulerName
from engine.strategies import param_groups
from tests.engine.training_helpers import DEVICE, SMALL, Recorder, finetune, pretrain, weights


def test_pretrain_reports_each_epoch_and_writes_a_checkpoint(tiny_data_root, tmp_path):
    hooks = Recorder()
    spec = PretrainSpec(
        dataset="stl10",
        model="simple_cnn",
        hyperparameters={"epochs": 2, "batch_size": 32},
        data=SMALL,
    )
    result = run_job(
        spec,
        data_root=tiny_data_root,
        workdir=tmp_path / "w",
        checkpoint_dir=tmp_path / "c",
        hooks=hooks,
        device=DEVICE,
    )
    assert [[m.phase for m in row] for row in hooks.epochs] == [["train", "val"], ["train", "val"]]
    assert [m.epoch for m in result.epochs] == [1, 1, 2, 2]
    assert all(m.images_per_second > 0 and m.seconds > 0 for m in result.epochs)
    assert hooks.progress[-1] == pytest.approx(1.0) and hooks.progress == sorted(hooks.progress)
    assert sum(map(sum, result.evaluation.confusion_matrix)) == len(result.evaluation.true_labels)
    assert result.checkpoint.meta["class_names"][0] == "airplane"
    assert result.cost.memory_device.startswith(DEVICE) and result.cost.peak_memory_bytes > 0
    assert result.cost.trainable_parameters == result.cost.total_parameters


@pytest.mark.parametrize("strategy", ["linear", "partial", "full", "lp_ft"])
def test_every_strategy_adapts_the_source_to_the_target_classes(tiny_data_root, tmp_path, source, strategy):
    hooks = Recorder()
    result = finetune(tiny_data_root, tmp_path, source, hooks=hooks, strategy=strategy)
    cost, steps = result.cost, hooks.starts[0].steps_per_epoch
    assert len(result.checkpoint.meta["class_names"]) == len(result.evaluation.per_class) == 10
    assert result.checkpoint.meta["strategy"] == strategy
    assert cost.total_parameters == source.cost.total_parameters
    if strategy == "linear":
        assert cost.trainable_parameters < cost.total_parameters / 5
    if strategy == "partial":
        assert cost.trainable_parameters < cost.total_parameters
    if strategy in ("full", "lp_ft"):
        assert cost.trainable_parameters == cost.total_parameters
    if strategy == "lp_ft":  # one epoch of head-only probing, then one of everything
        head = sum(p.numel() for p in build_model("simple_cnn", 10).head.parameters())
        assert cost.parameter_updates == (head + cost.total_parameters) * steps
    else:
        assert cost.parameter_updates == cost.trainable_parameters * 2 * steps


def test_linear_on_cached_features_equals_training_through_the_frozen_extractor(
    tiny_data_root, tmp_path, source
):
    cached = finetune(tiny_data_root, tmp_path, source, name="cached", strategy="linear")
    through = finetune(tiny_data_root, tmp_path, source, name="through", strategy="linear", cache_bytes=0)
    a, b = weights(cached), weights(through)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    assert cached.evaluation.accuracy == through.evaluation.accuracy
    assert [round(m.loss, 4) for m in cached.epochs] == [round(m.loss, 4) for m in through.epochs]


@pytest.mark.parametrize("strategy,frozen", [("linear", 4), ("partial", 2)])
def test_frozen_blocks_and_their_batchnorm_statistics_stay_bit_identical(
    tiny_data_root, tmp_path, source, strategy, frozen
):
    fields = {"strategy": strategy} | ({"frozen_blocks": frozen} if strategy == "partial" else {})
    result = finetune(tiny_data_root, tmp_path, source, **fields)
    before, after = weights(source), weights(result)
    frozen_keys = [k for k in before if any(k.startswith(f"blocks.{i}.") for i in range(frozen))]
    assert any(k.endswith("running_mean") for k in frozen_keys)
    assert all(torch.equal(before[k], after[k]) for k in frozen_keys)
    trained = [k for k in before if k.startswith(f"blocks.{frozen}.")]
    assert all(torch.equal(before[k], after[k]) for k in trained) == (strategy == "linear")


def test_full_trains_the_extractor_at_a_lower_learning_rate():
    model = build_model("simple_cnn", 10)
    groups = param_groups(model, 0, lr=1e-3, extractor_factor=0.1)
    assert [g["name"] for g in groups] == ["extractor", "head"]
    assert groups[0]["lr"] == pytest.approx(1e-4) and groups[1]["lr"] == 1e-3


def test_frozen_blocks_beyond_the_model_names_the_allowed_range():
    spec = FinetuneSpec(strategy="partial", frozen_blocks=7)
    with pytest.raises(SpecError, match=r"allowed 1\.\.3") as info:
        validate_finetune(spec, "simple_cnn")
    assert info.value.field == "frozen_blocks"
    with pytest.raises(SpecError, match="partial"):
        validate_finetune(FinetuneSpec(strategy="linear", frozen_blocks=1), "simple_cnn")


def test_lp_ft_needs_two_epochs():
    with pytest.raises(SpecError, match="at least 2 epochs"):
        validate_finetune(FinetuneSpec(strategy="lp_ft", hyperparameters={"epochs": 1}), "resnet18")


USUAL_LR = {"adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3, "sgd": 0.05}


@pytest.mark.parametrize("optimizer", list(OptimizerName))
def test_every_optimizer_trains(tiny_data_root, tmp_path, source, optimizer):
    result = finetune(
        tiny_data_root,
        tmp_path,
        source,
        strategy="linear",
        hyperparameters={"optimizer": optimizer, "lr": USUAL_LR[optimizer], "epochs": 3, "scheduler": "none"},
    )
    train_losses = [m.loss for m in result.epochs if m.phase == "train"]
    assert train_losses[-1] < train_losses[0]


@pytest.mark.parametrize("scheduler", list(SchedulerName))
def test_every_scheduler_shapes_the_learning_rate(tiny_data_root, tmp_path, source, scheduler):
    hyper = {"scheduler": scheduler, "lr": 0.01, "epochs": 3, "step_gamma": 0.5}
    result = finetune(tiny_data_root, tmp_path, source, strategy="linear", hyperparameters=hyper)
    lrs = [m.lr for m in result.epochs if m.phase == "train"]
    if scheduler == "none":
        assert lrs == [0.01] * 3
    elif scheduler == "cosine":
        assert lrs[0] > lrs[1] > lrs[2] == pytest.approx(0, abs=1e-9)
    elif scheduler == "step":
        assert lrs == pytest.approx([0.005, 0.0025, 0.00125])
    else:  # one-cycle warms up to the peak, then anneals far below it
        assert lrs[2] < 1e-4 and max(lrs) <= 0.01


def test_same_seed_same_device_gives_the_same_weights(tiny_data_root, tmp_path):
    a = pretrain(tiny_data_root, tmp_path, "a")
    b = pretrain(tiny_data_root, tmp_path, "b")
    assert a.checkpoint.sha256 == b.checkpoint.sha256
    c = pretrain(tiny_data_root, tmp_path, "c", seed=1)
    assert c.checkpoint.sha256 != a.checkpoint.sha256


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cancel_stops_between_batches_and_a_rerun_resumes_to_the_same_result(
    tiny_data_root, tmp_path, source, precision
):
    whole_hooks = Recorder()
    epochs3 = {"hyperparameters": {"epochs": 3, "precision": precision}, "strategy": "partial"}
    uninterrupted = finetune(tiny_data_root, tmp_path, source, name="whole", hooks=whole_hooks, **epochs3)
    steps = whole_hooks.starts[0].steps_per_epoch
    hooks = Recorder(stop_after_batches=steps + 1)  # one batch into epoch 2
    with pytest.raises(JobCancelled):
        finetune(tiny_data_root, tmp_path, source, name="cut", hooks=hooks, **epochs3)
    assert len(hooks.epochs) == 1 and len(hooks.progress) == steps + 1
    resumed_hooks = Recorder()
    resumed = finetune(tiny_data_root, tmp_path, source, name="cut", hooks=resumed_hooks, **epochs3)
    assert resumed_hooks.starts[0].resumed_from_epoch == 1
    assert len(resumed_hooks.epochs) == 2  # only epochs 2 and 3 ran again
    assert [m.epoch for m in resumed.epochs] == [m.epoch for m in uninterrupted.epochs]
    assert resumed.checkpoint.sha256 == uninterrupted.checkpoint.sha256


def test_control_run_starts_from_random_weights(tiny_data_root, tmp_path, source):
    control = finetune(tiny_data_root, tmp_path, source, strategy="linear", random_init=True)
    before, after = weights(source), weights(control)
    assert not torch.equal(before["blocks.0.0.weight"], after["blocks.0.0.weight"])
    assert control.checkpoint.meta["random_init"] is True


def test_predictor_applies_the_training_preprocessing_to_pil_images(tiny_data_root, tmp_path, source):
    from PIL import Image

    from engine.datasets import load_split

    result = finetune(tiny_data_root, tmp_path, source, strategy="full")
    predictor = Predictor.load(result.checkpoint.directory, expected_sha256=result.checkpoint.sha256)
    test = load_split("mnist", "test", tiny_data_root)
    rows = result.evaluation.sample_indices[:5]
    pil = [Image.fromarray(test.images[i, 0].numpy(), mode="L") for i in rows]
    from_pil = predictor.probabilities(pil)
    from_tensor = predictor.probabilities(test.images[rows])
    torch.testing.assert_close(from_pil, from_tensor)
    torch.testing.assert_close(from_pil, result.evaluation.probabilities[:5], rtol=1e-4, atol=1e-5)
    # An RGB or RGBA upload of the same digit is converted to grey first, as in training.
    rgb = [im.convert("RGB") for im in pil]
    torch.testing.assert_close(predictor.probabilities(rgb), from_pil)
    top = predictor.predict(pil[:1], top_k=3)[0]
    assert top.label == predictor.class_names[top.index] and len(top.top) == 3


def test_resume_state_is_saved_at_most_as_often_as_asked(tiny_data_root, tmp_path, source):
    spec = FinetuneSpec(dataset="mnist", strategy="linear", hyperparameters={"epochs": 3}, data=SMALL)
    common = {
        "data_root": tiny_data_root,
        "workdir": tmp_path / "work",
        "checkpoint_dir": tmp_path / "ckpt",
        "source_checkpoint": source.checkpoint.directory,
        "device": DEVICE,
        "resume_every_seconds": 3600,  # only the end of the phase would be saved
    }
    hooks = Recorder()
    hooks.should_stop = lambda: len(hooks.epochs) == 2  # stop early in epoch 3
    with pytest.raises(JobCancelled):
        run_job(spec, hooks=hooks, **common)
    again = Recorder()
    run_job(spec, hooks=again, **common)
    assert again.starts[0].resumed_from_epoch == 0


def test_momentum_defaults_to_each_optimizers_usual_value():
    from engine.optim import make_optimizer
    from engine.spec import Hyperparameters

    params = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.1}]
    assert make_optimizer(params, Hyperparameters(optimizer="sgd")).defaults["momentum"] == 0.9
    assert make_optimizer(params, Hyperparameters(optimizer="rmsprop")).defaults["momentum"] == 0.0
    given = Hyperparameters(optimizer="rmsprop", momentum=0.5)
    assert make_optimizer(params, given).defaults["momentum"] == 0.5
    with pytest.raises(SpecError, match="nesterov"):
        make_optimizer(params, Hyperparameters(optimizer="sgd", momentum=0, nesterov=True))
