"""Numerics by measurement (engine/calibrate.py): fake trials with injected timings and losses decide
which candidate a job gets; the real trial and the cache are exercised on a tiny model."""

from __future__ import annotations

import torch

from engine.calibrate import (
    STEPS_PER_TRIAL,
    CalibrationCache,
    Candidate,
    Trial,
    affordable_trial_steps,
    calibrate,
    cpu_stages,
    cuda_stages,
    trial_steps,
)
from engine.calibration_trial import TrainingStepTrial
from engine.models import build_model
from engine.preprocess import InputSpec
from engine.spec import Hyperparameters

FP32 = Candidate("fp32")
NCHW = Candidate("fp32", channels_last=False)
BF16 = Candidate("bf16")
HALF_THREADS = Candidate("fp32", threads=1)
STAGES = cpu_stages(default_threads=2, precisions=["fp32", "bf16"], compile_candidate=False)
BIG_JOB = 10_000  # steps: large enough that calibration is never skipped as too costly


class FakeTrials:
    """Seconds per step and loss per candidate name; records what was timed."""

    def __init__(self, seconds: dict[str, float], losses: dict[str, float] | None = None, setup=None):
        self.seconds, self.losses, self.setup = seconds, losses or {}, setup or {}
        self.timed: list[str] = []

    def __call__(self, c: Candidate) -> Trial:
        self.timed.append(c.name)
        return Trial(self.seconds.get(c.name, 1.0), self.losses.get(c.name, 2.3), self.setup.get(c.name, 0.0))


def choose(trials: FakeTrials, stages=STAGES, **kw):
    kw.setdefault("job_steps", BIG_JOB)
    kw.setdefault("budget_seconds", 60.0)
    return calibrate(FP32, stages, trials, **kw)


def test_the_baseline_stays_when_nothing_is_faster():
    assert choose(FakeTrials({})).chosen == FP32


def test_nchw_is_chosen_when_it_is_faster():
    assert choose(FakeTrials({NCHW.name: 0.5})).chosen == NCHW


def test_bf16_is_chosen_when_it_is_faster_and_its_loss_agrees():
    calibration = choose(FakeTrials({BF16.name: 0.6}, {FP32.name: 2.30, BF16.name: 2.31}))
    assert calibration.chosen == BF16 and calibration.how == "measured"


def test_fewer_threads_are_chosen_when_they_are_faster():
    assert choose(FakeTrials({HALF_THREADS.name: 0.7})).chosen == HALF_THREADS


def test_compile_is_chosen_when_it_pays_after_its_compile_time():
    stages = cuda_stages(compile_candidate=True)
    compiled = Candidate("fp32", compile=True)
    trials = FakeTrials({compiled.name: 0.5}, setup={compiled.name: 100.0})
    assert calibrate(FP32, stages, trials, job_steps=1000, budget_seconds=60).chosen == compiled


def test_compile_is_refused_when_its_compile_time_costs_more_than_it_saves():
    stages = cuda_stages(compile_candidate=True)
    compiled = Candidate("fp32", compile=True)
    trials = FakeTrials({compiled.name: 0.5}, setup={compiled.name: 100.0})
    assert calibrate(FP32, stages, trials, job_steps=100, budget_seconds=60).chosen == FP32


def test_a_faster_bf16_whose_loss_disagrees_is_never_chosen():
    calibration = choose(FakeTrials({BF16.name: 0.1}, {FP32.name: 2.30, BF16.name: 2.50}))
    assert calibration.chosen.precision == "fp32"
    assert "disagrees" in calibration.refused[BF16.name]


def test_a_nan_bf16_loss_is_never_chosen():
    assert choose(FakeTrials({BF16.name: 0.1}, {BF16.name: float("nan")})).chosen.precision == "fp32"


def test_a_gain_within_the_noise_margin_keeps_the_simpler_candidate():
    assert choose(FakeTrials({NCHW.name: 0.98})).chosen == FP32


def test_a_cached_choice_is_reused_without_timing(tmp_path):
    cache, key = CalibrationCache(tmp_path / "calibration.json"), {"cpu": "x", "architecture": "resnet18"}
    first = FakeTrials({NCHW.name: 0.5})
    assert choose(first, cache=cache, key=key).chosen == NCHW and first.timed
    second = FakeTrials({})
    again = choose(second, cache=cache, key=key)
    assert again.chosen == NCHW and again.how == "cached" and second.timed == []


def test_another_key_is_timed_again(tmp_path):
    cache = CalibrationCache(tmp_path / "calibration.json")
    choose(FakeTrials({}), cache=cache, key={"image_size": 32})
    other = FakeTrials({})
    choose(other, cache=cache, key={"image_size": 64})
    assert other.timed


def test_an_unreadable_cache_is_measured_again(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text("{not json")
    trials = FakeTrials({})
    choose(trials, cache=CalibrationCache(path), key={"a": 1})
    assert trials.timed


def steps_affording(trial_steps_wanted: int) -> int:
    """The smallest job whose share holds `trial_steps_wanted` trial steps."""
    steps = 1
    while affordable_trial_steps(steps) < trial_steps_wanted:
        steps += 1
    return steps


def test_a_tiny_job_skips_calibration():
    trials = FakeTrials({NCHW.name: 0.1, BF16.name: 0.1})
    calibration = choose(trials, job_steps=steps_affording(2 * STEPS_PER_TRIAL) - 1)
    assert calibration.chosen == FP32 and trials.timed == [] and "too small" in calibration.how


def test_a_small_job_tries_bf16_first_and_only_what_its_share_holds():
    trials = FakeTrials({NCHW.name: 0.1, BF16.name: 0.6})
    small = steps_affording(2 * STEPS_PER_TRIAL)
    assert trial_steps(STAGES, FP32) > affordable_trial_steps(small)  # too small for the whole search
    calibration = choose(trials, job_steps=small)
    assert trials.timed == [FP32.name, BF16.name]
    assert calibration.chosen == BF16 and calibration.how.startswith("measured within the job's share")
    assert "share" in calibration.refused[NCHW.name]


def test_a_partial_choice_serves_small_jobs_and_the_first_job_with_room_measures_again(tmp_path):
    cache, key = CalibrationCache(tmp_path / "calibration.json"), {"cpu": "x"}
    small = steps_affording(2 * STEPS_PER_TRIAL)
    choose(FakeTrials({BF16.name: 0.6}), cache=cache, key=key, job_steps=small)
    another_small = FakeTrials({})
    reused = choose(another_small, cache=cache, key=key, job_steps=small)
    assert reused.how == "cached" and reused.chosen == BF16 and another_small.timed == []
    bf16_one_thread = Candidate("bf16", threads=1)
    big = FakeTrials({BF16.name: 0.6, bf16_one_thread.name: 0.3})
    measured = choose(big, cache=cache, key=key, job_steps=BIG_JOB)
    assert measured.how == "measured" and big.timed == [FP32.name, BF16.name, NCHW.name, bf16_one_thread.name]
    assert measured.chosen == bf16_one_thread
    later_small = FakeTrials({})
    assert choose(later_small, cache=cache, key=key, job_steps=small).chosen == measured.chosen
    assert choose(FakeTrials({}), cache=cache, key=key).how == "cached"  # a whole search holds for all


def test_no_trial_starts_after_the_budget():
    ticks = iter(range(100))
    trials = FakeTrials({NCHW.name: 0.1})
    calibration = choose(trials, budget_seconds=0.5, clock=lambda: float(next(ticks)))
    assert trials.timed == [FP32.name] and calibration.chosen == FP32
    assert "budget" in calibration.refused[NCHW.name]


def test_the_real_trial_times_steps_and_bf16_loss_is_close_to_fp32s():
    model = build_model("simple_cnn", 10)
    trial = TrainingStepTrial(
        model,
        frozen_blocks=0,
        images=torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8),
        labels=torch.arange(8) % 10,
        spec=InputSpec(image_size=16, channels=1, mean=(0.5,), std=(0.5,)),
        hyperparameters=Hyperparameters(),
        device=torch.device("cpu"),
    )
    fp32, bf16 = trial(FP32), trial(BF16)
    assert fp32.seconds_per_step > 0 and bf16.seconds_per_step > 0
    assert abs(bf16.loss - fp32.loss) < 0.1 * fp32.loss
    assert trial(FP32).loss == fp32.loss  # same weights, same batch: the same steps


def _pretrain_spec():
    from engine.spec import PretrainSpec

    return PretrainSpec(
        dataset="stl10",
        model="simple_cnn",
        hyperparameters={"epochs": 1, "batch_size": 8},
        data={"image_size": 16, "val_fraction": 0.2},
    )


def _run(root, tmp_path, name, calibration):
    from engine.run import run_job

    return run_job(
        _pretrain_spec(),
        data_root=root,
        workdir=tmp_path / name / "work",
        checkpoint_dir=tmp_path / name / "ckpt",
        device="cpu",
        calibration=calibration,
    )


def test_a_job_records_its_phase_split_and_how_its_numerics_were_chosen(tiny_data_root, tmp_path):
    result = _run(tiny_data_root, tmp_path, "a", None)
    phases = result.cost.phase_seconds
    for name in ("model", "data", "calibration", "train", "validate", "evaluate", "checkpoint"):
        assert phases[name] >= 0, name
    assert phases["engine_total"] >= sum(v for k, v in phases.items() if k != "engine_total") * 0.99
    assert result.cost.numerics["chosen"]["precision"] == result.precision


def test_a_job_calibrates_once_and_the_next_reuses_the_cached_choice(tiny_data_root, tmp_path, monkeypatch):
    from engine.job_numerics import CalibrationOptions

    monkeypatch.setattr("engine.calibrate.MAX_CALIBRATION_SHARE", 1e6)  # the tiny job calibrates
    monkeypatch.setattr("engine.job_numerics.machine_is_oversubscribed", lambda: False)
    options = CalibrationOptions(cache_path=tmp_path / "calibration.json", budget_seconds=60)
    first = _run(tiny_data_root, tmp_path, "first", options)
    assert first.cost.numerics["how"] == "measured" and first.cost.numerics["trials"]
    second = _run(tiny_data_root, tmp_path, "second", options)
    assert second.cost.numerics["how"] == "cached"
    assert second.cost.numerics["chosen"] == first.cost.numerics["chosen"]


def test_a_choice_measured_on_a_busy_machine_is_reused_while_busy_and_measured_again_when_quiet(tmp_path):
    cache, key = CalibrationCache(tmp_path / "calibration.json"), {"cpu": "shared"}
    choose(FakeTrials({HALF_THREADS.name: 0.5}), cache=cache, key=key, busy=True)
    still_busy = FakeTrials({})
    assert choose(still_busy, cache=cache, key=key, busy=True).how == "cached" and not still_busy.timed
    quiet = FakeTrials({})
    assert choose(quiet, cache=cache, key=key).chosen == FP32 and quiet.timed
    assert choose(FakeTrials({}), cache=cache, key=key, busy=True).how == "cached"  # a quiet choice holds


def test_the_busy_question_is_asked_only_where_its_answer_matters(tmp_path):
    cache, key = CalibrationCache(tmp_path / "calibration.json"), {"cpu": "x"}
    asked: list[bool] = []

    def busy() -> bool:
        asked.append(True)
        return False

    choose(FakeTrials({}), cache=cache, key=key, busy=busy)
    assert len(asked) == 1  # measuring: asked once, before the trials
    assert choose(FakeTrials({}), cache=cache, key=key, busy=busy).how == "cached" and len(asked) == 1
    choose(FakeTrials({}), cache=cache, key={"cpu": "y"}, busy=lambda: True)  # measured busy
    again = choose(FakeTrials({}), cache=cache, key={"cpu": "y"}, busy=busy)
    assert again.how == "measured" and len(asked) == 3  # the busy entry asked, then the new measure


def test_others_use_of_our_cores_is_sampled_from_proc_stat(monkeypatch):
    from engine import cpu_contention

    # Two samples of two CPUs: cpu0 busy 50 of 100 ticks, cpu1 busy 30 of 100.
    samples = iter([{0: (1000, 800), 1: (1000, 900)}, {0: (1100, 850), 1: (1100, 970)}])
    monkeypatch.setattr(cpu_contention, "usable_cpus", lambda: {0, 1})
    monkeypatch.setattr(cpu_contention, "_cpu_ticks", lambda cpus: next(samples))
    assert abs(cpu_contention.others_busy_cores(sleep=lambda s: None) - 0.8) < 1e-9
    samples = iter([{0: (1000, 800), 1: (1000, 900)}, {0: (1100, 880), 1: (1100, 990)}])
    assert cpu_contention.oversubscribed() is False  # 0.3 of a core: not contention


def test_the_real_proc_stat_reads_and_a_probe_samples_once():
    from engine.cpu_contention import OversubscriptionProbe, _cpu_ticks, usable_cpus

    ticks = _cpu_ticks(usable_cpus())
    assert ticks is not None and all(total >= idle >= 0 for total, idle in ticks.values())
    calls: list[int] = []
    probe = OversubscriptionProbe(lambda: calls.append(1) or True)
    assert probe() and probe() and probe.value is True and len(calls) == 1
