"""Numerics chosen by measurement: a few timed training steps per candidate, on this device, for this
architecture and input size, cached per machine.

    calibration = calibrate(baseline, stages, run_trial, job_steps=58, budget_seconds=20, cache=cache,
                            key=key)
    calibration.chosen          # Candidate(precision="bf16", channels_last=True, threads=2, ...)

A candidate is a way to compute the same training step: autocast dtype, memory format, CPU intra-op
threads, torch.compile. `run_trial` trains a copy of the model from the same initial weights on the
same batch for WARMUP_STEPS + TIMED_STEPS steps and returns the seconds per timed step and the mean
loss over all steps (engine/calibration_trial.py; tests inject fake timings).

The rules, each named below:
- bf16 is chosen only where its trial loss agrees with the fp32 baseline's within
  BF16_LOSS_RELATIVE_TOLERANCE (same initial weights, same batch, same steps): |l_bf16 - l_fp32| <=
  2% of |l_fp32|. A bf16 whose loss disagrees is never chosen, however fast.
- What a candidate costs the job is its one-off setup (compile time, measured as the warm-up step's
  excess over a timed step) plus job_steps x its seconds per step; torch.compile is chosen only where
  that total is lower, i.e. where it pays after its compile time.
- A candidate replaces the one chosen so far only when it is at least NOISE_MARGIN (5%) cheaper: on
  a busy machine a tie is noise, and the earlier candidate is the simpler one.
- Stages search greedily: each stage's candidates vary the best so far in one respect (layout and
  precision, then threads, then compile), so the trials grow with the stages, not their product.
- Bounded: no trial starts once budget_seconds have passed (the baseline always runs); what was not
  tried is not chosen.
- Timings taken while the machine is oversubscribed (others use the job's cores: another job,
  another build) hold while it stays so: fewer threads win by avoiding the contention, and would
  halve a quiet machine's speed. Such a choice is cached marked busy (engine/job_numerics.py passes
  a probe that samples the cores, engine/cpu_contention.py): reused while the machine is busy,
  measured again once it is quiet.
- A job's trials take at most MAX_CALIBRATION_SHARE (a quarter) of its own training steps. The
  largest gain measured (bf16 on a CPU with AMX: 1.62x, 38% of training saved) could not repay trials
  longer than that on the job itself. Stages list first the candidates that gained most where we
  measured (bf16 before the layout, the layout before threads), so a small job tries what fits in its
  share in that order: a 2-epoch job of 15 steps an epoch affords the baseline and bf16, not the
  layout and threads. Such a choice is cached as partial: jobs that could not afford more reuse it, the
  first job that affords every trial measures again. A job whose share holds no candidate beside the
  baseline runs the baseline. A cached choice costs nothing and is used whatever the job's size.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from engine.durable import write_atomically

WARMUP_STEPS = 1  # not timed: first-call allocations, oneDNN/cuDNN kernel selection, compilation
TIMED_STEPS = 2
STEPS_PER_TRIAL = WARMUP_STEPS + TIMED_STEPS
BF16_LOSS_RELATIVE_TOLERANCE = 0.02
NOISE_MARGIN = 0.05
MAX_CALIBRATION_SHARE = 0.25


@dataclass(frozen=True)
class Candidate:
    """One way to compute a training step."""

    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = True
    threads: int | None = None  # CPU intra-op threads; None leaves torch's default
    compile: bool = False

    @property
    def name(self) -> str:
        layout = "channels_last" if self.channels_last else "nchw"
        threads = f"/threads={self.threads}" if self.threads is not None else ""
        return f"{self.precision}/{layout}{threads}{'/compiled' if self.compile else ''}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Candidate:
        return cls(
            precision=d["precision"],
            channels_last=bool(d["channels_last"]),
            threads=d.get("threads"),
            compile=bool(d.get("compile", False)),
        )


@dataclass(frozen=True)
class Trial:
    seconds_per_step: float  # median of the timed steps
    loss: float  # mean training loss over every step of the trial
    setup_seconds: float = 0.0  # paid once per job (compilation)

    def job_seconds(self, job_steps: int) -> float:
        """What this candidate would cost the job's training: setup plus every step."""
        return self.setup_seconds + job_steps * self.seconds_per_step


@dataclass
class Calibration:
    chosen: Candidate
    how: str  # "measured" (or "measured within the job's share ..."), "cached", or why unmeasured
    seconds: float = 0.0  # what the calibration cost this job
    trials: dict[str, Trial] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # candidate name -> why it was not chosen

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen.to_dict(),
            "how": self.how,
            "seconds": self.seconds,
            "trials": {k: asdict(t) for k, t in self.trials.items()},
            "refused": dict(self.refused),
        }


Stage = Callable[[Candidate], Sequence[Candidate]]  # variants of the best candidate so far
TrialRunner = Callable[[Candidate], Trial]
Busy = bool | Callable[[], bool]  # a callable is asked only where the answer matters (it may cost a sample)


def is_busy(busy: Busy) -> bool:
    return busy() if callable(busy) else busy


class CalibrationCache:
    """Choices by key in one JSON file (the caller names it: the engine knows no state folder)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @staticmethod
    def key_text(key: Mapping[str, Any]) -> str:
        return json.dumps(dict(key), sort_keys=True)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):  # none yet, or unreadable: calibrate again and rewrite it
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: Mapping[str, Any], busy: Busy = False, complete: bool = False) -> Candidate | None:
        """The cached choice; one measured on a busy machine only while this one is busy too, and with
        `complete` only one whose search tried every candidate. `busy` is asked only for a busy entry."""
        entry = self._read().get(self.key_text(key))
        try:
            if not isinstance(entry, dict) or (entry.get("busy", False) and not is_busy(busy)):
                return None
            if complete and not entry.get("complete", True):  # entries before partial ones were complete
                return None
            return Candidate.from_dict(entry["chosen"])
        except (KeyError, TypeError, ValueError):
            return None

    def put(
        self, key: Mapping[str, Any], calibration: Calibration, busy: bool = False, complete: bool = True
    ) -> None:
        data = self._read()
        data[self.key_text(key)] = {**calibration.to_dict(), "busy": busy, "complete": complete}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(data, indent=1, sort_keys=True)
        write_atomically(self.path, lambda tmp: tmp.write_text(text))


def trial_steps(stages: Sequence[Stage], baseline: Candidate) -> int:
    """The most training steps the trials can take: every stage's variants of the baseline, plus it."""
    count = 1 + sum(len(stage(baseline)) for stage in stages)
    return count * STEPS_PER_TRIAL


def affordable_trial_steps(job_steps: int) -> int:
    """The trial steps a job of `job_steps` training steps may spend (its share)."""
    return int(MAX_CALIBRATION_SHARE * job_steps)


def loss_agrees(loss: float, reference: float, tolerance: float = BF16_LOSS_RELATIVE_TOLERANCE) -> bool:
    return loss == loss and abs(loss - reference) <= tolerance * max(abs(reference), 1e-8)


def calibrate(
    baseline: Candidate,
    stages: Sequence[Stage],
    run_trial: TrialRunner,
    *,
    job_steps: int,
    budget_seconds: float,
    cache: CalibrationCache | None = None,
    key: Mapping[str, Any] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    busy: Busy = False,
) -> Calibration:
    """The cheapest candidate for a job of `job_steps` training steps (see the module's rules).
    busy: whether the machine is oversubscribed now (a measurement is cached as such; see the rules);
    a callable is asked before the trials start, or for a cached choice that was measured busy."""
    started = clock()
    affordable = affordable_trial_steps(job_steps)
    whole_search = trial_steps(stages, baseline) <= affordable
    if cache is not None and key is not None:
        # A partial choice serves a job that could not search further itself; one that can, does.
        cached = cache.get(key, busy, complete=whole_search)
        if cached is not None:
            return Calibration(cached, "cached", clock() - started)
    if not stages:
        return Calibration(baseline, "nothing to choose between")
    if budget_seconds <= 0:
        return Calibration(baseline, "calibration off (budget 0 s)")
    if affordable < 2 * STEPS_PER_TRIAL:
        return Calibration(
            baseline,
            f"job too small to repay calibration ({2 * STEPS_PER_TRIAL} trial steps for one candidate "
            f"beside the baseline, {job_steps} job steps)",
        )
    measured_busy = is_busy(busy)  # before the trials, which load the cores themselves
    result = Calibration(baseline, "measured")
    reference = run_trial(baseline)
    result.trials[baseline.name] = reference
    spent = STEPS_PER_TRIAL
    best, best_cost = baseline, reference.job_seconds(job_steps)
    for stage in stages:
        for candidate in stage(best):
            if candidate.name in result.trials:
                continue
            if clock() - started >= budget_seconds:
                result.refused[candidate.name] = f"not tried: the {budget_seconds:g} s budget was spent"
                continue
            if spent + STEPS_PER_TRIAL > affordable:
                result.refused[candidate.name] = (
                    f"not tried: the job's share ({affordable} trial steps of {job_steps}) was spent"
                )
                continue
            trial = run_trial(candidate)
            spent += STEPS_PER_TRIAL
            result.trials[candidate.name] = trial
            if candidate.precision == "bf16" and baseline.precision == "fp32":
                if not loss_agrees(trial.loss, reference.loss):
                    result.refused[candidate.name] = (
                        f"loss {trial.loss:.4g} disagrees with fp32's {reference.loss:.4g}"
                    )
                    continue
            cost = trial.job_seconds(job_steps)
            if cost <= best_cost * (1 - NOISE_MARGIN):
                best, best_cost = candidate, cost
    result.chosen = best
    result.seconds = clock() - started
    if not whole_search:
        result.how = f"measured within the job's share ({spent} of {job_steps} steps)"
    if cache is not None and key is not None:
        cache.put(key, result, measured_busy, complete=whole_search)
    return result


def cpu_stages(default_threads: int, precisions: Sequence[str], compile_candidate: bool) -> list[Stage]:
    """Precision and layout, then half the threads (when there are 2 or more), then compile if asked."""

    def layout_and_precision(best: Candidate) -> list[Candidate]:
        # bf16 first: where a small job's share holds one candidate, it is the one that gained most
        # (1.6x on resnet18 at 64 px, batch 128, 2 Zen 4 cores; channels-last over NCHW: 0-6%).
        out = [replace(best, precision=p) for p in precisions if p != best.precision]  # type: ignore[arg-type]
        out += [replace(best, channels_last=not best.channels_last)]
        return out

    stages: list[Stage] = [layout_and_precision]
    if default_threads >= 2:
        stages.append(lambda best: [replace(best, threads=default_threads // 2)])
    if compile_candidate:
        stages.append(lambda best: [replace(best, compile=True)])
    return stages


def cuda_stages(compile_candidate: bool) -> list[Stage]:
    """On a GPU the precision is not searched (bf16 where native, else fp32): layout, then compile."""
    stages: list[Stage] = [lambda best: [replace(best, channels_last=not best.channels_last)]]
    if compile_candidate:
        stages.append(lambda best: [replace(best, compile=True)])
    return stages
