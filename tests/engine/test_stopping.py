"""A run stops wherever a worker that lost its job could otherwise spend long or write: should_stop is
polled after every batch of feature caching, training, validation and testing, and right before each
resume state and the checkpoint are written. Once stopped, nothing more is written."""

import pytest
import torch

from engine.checkpoint import WEIGHTS_FILE
from engine.errors import JobCancelled
from engine.loop import ImageSource, infer_logits, precompute
from engine.numerics import resolve_numerics
from engine.preprocess import InputSpec
from engine.resume import load_state
from tests.engine.training_helpers import StopAtPoll, finetune

# The tiny MNIST split with SMALL's options and batches of 32: 80 training rows (3 steps), 20 held out
# for validation (1 batch), 50 test rows (2 batches). Each epoch also polls once before its resume
# state (the helper saves one every epoch).
STEPS, VAL_BATCHES, TEST_BATCHES = 3, 1, 2
POLLS_PER_EPOCH = STEPS + VAL_BATCHES + 1
EPOCHS = 2


def _run(tiny_data_root, tmp_path, source, hooks, cache_bytes=0):
    return finetune(tiny_data_root, tmp_path, source, hooks=hooks, strategy="linear", cache_bytes=cache_bytes)


def _checkpoint_written(tmp_path) -> bool:
    return (tmp_path / "ft" / "ckpt" / WEIGHTS_FILE).exists()


def _resume_state(tmp_path):
    return load_state(tmp_path / "ft" / "work" / "resume")


def _stopped(tiny_data_root, tmp_path, source, at_poll, cache_bytes=0) -> StopAtPoll:
    hooks = StopAtPoll(at_poll)
    with pytest.raises(JobCancelled):
        _run(tiny_data_root, tmp_path, source, hooks, cache_bytes)
    assert len(hooks.grad_enabled_at_polls) == at_poll  # it stopped at that poll, not later
    return hooks


def test_a_whole_run_polls_after_every_batch_and_before_every_write(tiny_data_root, tmp_path, source):
    hooks = StopAtPoll()
    _run(tiny_data_root, tmp_path, source, hooks)
    assert hooks.starts[0].steps_per_epoch == STEPS
    # True: a training batch or a write (resume state, checkpoint); False: a validation or test batch.
    epoch = [True] * STEPS + [False] * VAL_BATCHES + [True]
    assert hooks.grad_enabled_at_polls == epoch * EPOCHS + [False] * TEST_BATCHES + [True]


def test_caching_frozen_features_stops_before_any_training_and_writes_nothing(
    tiny_data_root, tmp_path, source
):
    hooks = _stopped(tiny_data_root, tmp_path, source, at_poll=1, cache_bytes=None)  # linear: cached
    assert hooks.progress == [] and hooks.grad_enabled_at_polls == [False]
    assert _resume_state(tmp_path) is None and not _checkpoint_written(tmp_path)


def test_validation_stops_before_the_epochs_resume_state_and_report(tiny_data_root, tmp_path, source):
    hooks = _stopped(tiny_data_root, tmp_path, source, at_poll=STEPS + 1)
    assert len(hooks.progress) == STEPS and hooks.grad_enabled_at_polls[-1] is False
    assert hooks.epochs == []
    assert _resume_state(tmp_path) is None and not _checkpoint_written(tmp_path)


def test_the_poll_before_the_first_resume_state_stops_its_write(tiny_data_root, tmp_path, source):
    hooks = _stopped(tiny_data_root, tmp_path, source, at_poll=POLLS_PER_EPOCH)
    assert hooks.grad_enabled_at_polls[-1] is True  # after the validation batch
    assert hooks.epochs == []  # reported only once its state is saved
    assert _resume_state(tmp_path) is None and not _checkpoint_written(tmp_path)


def test_the_poll_before_a_later_resume_state_keeps_the_previous_one(tiny_data_root, tmp_path, source):
    hooks = _stopped(tiny_data_root, tmp_path, source, at_poll=2 * POLLS_PER_EPOCH)
    assert len(hooks.epochs) == 1
    assert _resume_state(tmp_path)["epoch"] == 1 and not _checkpoint_written(tmp_path)


def test_the_test_pass_stops_before_the_checkpoint(tiny_data_root, tmp_path, source):
    hooks = _stopped(tiny_data_root, tmp_path, source, at_poll=POLLS_PER_EPOCH * EPOCHS + 1)
    assert len(hooks.epochs) == EPOCHS and hooks.grad_enabled_at_polls[-1] is False
    assert _resume_state(tmp_path)["epoch"] == EPOCHS  # written before the test pass, as always
    assert not _checkpoint_written(tmp_path)


def test_the_poll_right_before_the_checkpoint_stops_its_write(tiny_data_root, tmp_path, source):
    hooks = _stopped(tiny_data_root, tmp_path, source, at_poll=POLLS_PER_EPOCH * EPOCHS + TEST_BATCHES + 1)
    assert hooks.grad_enabled_at_polls[-1] is True  # after the test batches
    assert not _checkpoint_written(tmp_path) and not (tmp_path / "ft" / "ckpt").exists()


# --- the loops themselves -------------------------------------------------------------------------

CPU = torch.device("cpu")


def _source(rows: int, prefix=None) -> ImageSource:
    images = torch.randint(0, 256, (rows, 1, 20, 20), dtype=torch.uint8)
    spec = InputSpec(image_size=16, channels=1, mean=(0.5,), std=(0.5,))
    return ImageSource(images, torch.arange(rows) % 10, spec, False, resolve_numerics(CPU, "fp32"), prefix)


def _stop_at_poll(n: int):
    polls = []

    def should_stop() -> bool:
        polls.append(True)
        return len(polls) >= n

    return should_stop, polls


def test_precompute_polls_after_every_batch_and_stops_at_once():
    batches = []

    def prefix(x):
        batches.append(x.shape[0])
        return x.mean(dim=(2, 3))

    should_stop, polls = _stop_at_poll(2)
    with pytest.raises(JobCancelled):
        precompute(_source(10, prefix), 4, should_stop)
    assert batches == [4, 4] and len(polls) == 2  # the third batch never ran
    never, polls = _stop_at_poll(99)
    assert len(precompute(_source(10, prefix), 4, never)) == 10 and len(polls) == 3


def test_inference_polls_after_every_batch_and_stops_at_once():
    batches = []

    def forward(x):
        batches.append(x.shape[0])
        return x.flatten(1)[:, :10]

    should_stop, polls = _stop_at_poll(1)
    with pytest.raises(JobCancelled):
        infer_logits(_source(10), forward, 4, resolve_numerics(CPU, "fp32"), should_stop)
    assert batches == [4] and len(polls) == 1
    never, polls = _stop_at_poll(99)
    logits = infer_logits(_source(10), forward, 4, resolve_numerics(CPU, "fp32"), never)
    assert logits.shape == (10, 10) and len(polls) == 3
