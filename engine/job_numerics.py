"""A job's numerics: the defaults (engine/numerics.py) or what calibration measures faster for it.

    numerics, calibration = choose_numerics(spec, model, phases, data, input_spec, device,
                                            CalibrationOptions(cache_path=home / "calibration.json"))

What is searched where:
- CPU: channels-last or NCHW; fp32 or bf16 when the spec says `precision: auto` (an explicit
  precision is kept); half the intra-op threads; torch.compile only with `compile_on_cpu` (its
  compile time on a CPU takes longer than a CPU job's training saves, in what we measured).
- CUDA: bf16 stays where the GPU computes it natively (fp32 elsewhere), cudnn.benchmark is on (a
  job's batches have one image size and one batch size, so the autotuned kernels are reused), and
  channels-last and torch.compile are measured, compile counted with its compile time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from engine.calibrate import (
    Calibration,
    CalibrationCache,
    Candidate,
    Trial,
    calibrate,
    cpu_stages,
    cuda_stages,
)
from engine.calibration_trial import TrainingStepTrial, calibration_key
from engine.cpu_contention import OversubscriptionProbe, oversubscribed
from engine.job_data import JobData
from engine.loop import steps_per_epoch
from engine.models import TransferNet
from engine.numerics import Numerics, resolve_numerics
from engine.preprocess import InputSpec
from engine.spec import FinetuneSpec, Precision, PretrainSpec
from engine.strategies import Phase

DEFAULT_CALIBRATION_BUDGET_SECONDS = 20.0


@dataclass(frozen=True)
class CalibrationOptions:
    cache_path: Path | None = None  # a JSON file; None: measure every job (benchmarks, tests)
    budget_seconds: float = DEFAULT_CALIBRATION_BUDGET_SECONDS  # 0 turns calibration off
    compile_on_cpu: bool = False


def numerics_of(device: torch.device, candidate: Candidate) -> Numerics:
    dtype = torch.bfloat16 if candidate.precision == "bf16" else None
    return Numerics(device, dtype, candidate.channels_last, candidate.threads, candidate.compile)


def choose_numerics(
    spec: PretrainSpec | FinetuneSpec,
    model: TransferNet,
    phases: list[Phase],
    data: JobData,
    input_spec: InputSpec,
    device: torch.device,
    options: CalibrationOptions,
) -> tuple[Numerics, Calibration]:
    """The job's numerics and how they were chosen (SpecError for a bf16 the GPU cannot compute)."""
    hp = spec.hyperparameters
    default = resolve_numerics(device, hp.precision)
    baseline = Candidate(default.precision)  # type: ignore[arg-type]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        stages = cuda_stages(compile_candidate=True)
        precisions = [default.precision]
    else:
        precisions = ["fp32", "bf16"] if Precision(hp.precision) == Precision.auto else [default.precision]
        stages = cpu_stages(torch.get_num_threads(), precisions, options.compile_on_cpu)
    images, labels = data.train
    rows = int(labels.shape[0])
    if rows < 2:  # BatchNorm cannot train a step on one row; nothing to time
        return default, Calibration(baseline, "no training rows to time")
    batch = min(hp.batch_size, rows)
    job_steps = sum(p.epochs for p in phases) * steps_per_epoch(rows, hp.batch_size)
    phase = max(phases, key=lambda p: p.epochs)  # the step the job repeats most
    key = calibration_key(
        device,
        architecture=str(model.architecture),
        image_size=input_spec.image_size,
        channels=input_spec.channels,
        batch_size=batch,
        frozen_blocks=phase.frozen_blocks,
        optimizer=str(hp.optimizer),
        candidates=",".join(precisions) + ("+compile" if options.compile_on_cpu else ""),
    )
    cache = CalibrationCache(options.cache_path) if options.cache_path is not None else None
    trial: list[TrainingStepTrial] = []

    def run_trial(candidate: Candidate) -> Trial:
        if not trial:  # built only when a trial runs: a cached or skipped choice copies no model
            trial.append(
                TrainingStepTrial(
                    model,
                    frozen_blocks=phase.frozen_blocks,
                    images=images[:batch],
                    labels=labels[:batch],
                    spec=input_spec,
                    hyperparameters=hp,
                    device=device,
                )
            )
        return trial[0](candidate)

    # Sampled only if asked (a CPU job that measures, or meets a choice measured busy): 0.2 s.
    busy = OversubscriptionProbe(machine_is_oversubscribed if device.type == "cpu" else lambda: False)
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):  # the job's own draws are the same with or without it
        calibration = calibrate(
            baseline,
            stages,
            run_trial,
            job_steps=job_steps,
            budget_seconds=options.budget_seconds,
            cache=cache,
            key=key,
            busy=busy,
        )
    if busy.value and calibration.how.startswith(("measured", "cached")):
        calibration.how += " while the CPU was oversubscribed (others kept over half a core of it busy)"
    return numerics_of(device, calibration.chosen), calibration


def machine_is_oversubscribed() -> bool:
    """Others use this process's cores now (engine/cpu_contention.py); the tests replace it."""
    return oversubscribed()
