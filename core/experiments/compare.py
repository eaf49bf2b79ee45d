"""The comparison table of an experiment, from its stored rows only (jobs, epochs, evaluations, costs).

Choosing follows the usual rule: hyperparameters are chosen on the validation split (accuracy after
the last epoch; with early stopping, of the best epoch, whose weights were evaluated), and the test
split only reports the chosen runs. Per strategy variant the chosen hyperparameters are those with the
best mean selection measure over their seeds (ties: the faster; core.experiments.summary); the best
strategy is the chosen variant with the best mean. A fine-tune's transfer gain is its test accuracy
minus its control's: the run with the same spec (seed included) but random_init, so the gain is what
pre-training contributed, paired seed by seed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.experiments.plan import IMAGENET_SUFFIX
from core.experiments.probes import is_probe, layer_probe_rows
from core.experiments.schemas import (
    AxisFinding,
    AxisValue,
    Comparison,
    ComparisonRow,
    ExperimentCreate,
    PretrainSummary,
)
from core.experiments.summary import against_baselines, choose, summarise
from core.models import Cost, EpochMetric, Evaluation, Experiment, Job, JobRole, JobStatus
from engine.strategies import frozen_blocks_of, variant_name

VAL_MEASURE = "validation accuracy (last epoch)"
TRAIN_MEASURE = "training accuracy (last epoch; the runs have no validation split)"
AXES = ("lr", "batch_size", "optimizer")
BASELINE_STRATEGY = "pixels"  # the pixel baseline's rows: strategy and variant


def per_class(evaluation: Evaluation) -> list[dict[str, Any]]:
    """Its per-class rows: {label, precision, recall, f1, support}, in class order."""
    return list(evaluation.per_class)


def images_tested(evaluation: Evaluation) -> int:
    """Images it was tested on: the sum of the per-class support."""
    return sum(c["support"] for c in per_class(evaluation))


@dataclass(frozen=True, slots=True)
class LastEpoch:
    """What the comparison reads of a phase's last epoch row."""

    accuracy: float
    images_per_second: float
    seconds: float
    best_accuracy: float  # the best of the phase's epochs (early stopping evaluates that epoch's weights)
    epochs: int  # rows of the phase: the epochs it ran


def last_epochs(session: Session, job_ids: list[str]) -> dict[tuple[str, str], LastEpoch]:
    """(job id, phase) -> its last epoch. Columns, not ORM rows: an experiment page reads thousands,
    and whole objects cost their construction and, through the garbage collector, much more."""
    last: dict[tuple[str, str], LastEpoch] = {}
    if not job_ids:
        return last
    m = EpochMetric
    rows = session.execute(
        select(m.job_id, m.phase, m.accuracy, m.images_per_second, m.seconds)
        .where(m.job_id.in_(job_ids))
        .order_by(m.epoch)
    )
    for job_id, phase, accuracy, images_per_second, seconds in rows:
        before = last.get((job_id, phase))
        best = accuracy if before is None else max(before.best_accuracy, accuracy)
        epochs = 1 if before is None else before.epochs + 1
        last[(job_id, phase)] = LastEpoch(accuracy, images_per_second, seconds, best, epochs)
    return last


# A fine-tune's control is the same spec from random weights: whichever source (the pre-train, or
# ImageNet's weights) the fine-tune started from, so both are paired with one control.
_NOT_IN_CONTROL_KEY = ("random_init", "source_weights", "model")


def _control_key(spec: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in spec.items() if k not in _NOT_IN_CONTROL_KEY}, sort_keys=True)


def base_variant(variant: str) -> str:
    """The strategy variant without its source: linear@imagenet -> linear."""
    return variant.removesuffix(IMAGENET_SUFFIX)


def images_seen(metric: LastEpoch | None) -> int | None:
    # images_per_second is rows / seconds of that phase: their product is the rows it saw.
    return None if metric is None else round(metric.images_per_second * metric.seconds)


def pretrain_summary(session: Session, job: Job | None) -> PretrainSummary | None:
    if job is None:
        return None
    last = last_epochs(session, [job.id])
    evaluation = session.get(Evaluation, job.id)
    cost = session.get(Cost, job.id)
    return PretrainSummary(
        job_id=job.id,
        status=job.status,
        dataset=job.dataset,
        architecture=job.architecture,
        epochs=job.spec["hyperparameters"]["epochs"],
        image_size=job.spec["data"]["image_size"],
        train_images=images_seen(last.get((job.id, "train"))),
        val_images=images_seen(last.get((job.id, "val"))) or (0 if (job.id, "train") in last else None),
        test_images=images_tested(evaluation) if evaluation else None,
        test_accuracy=evaluation.accuracy if evaluation else None,
        train_seconds=cost.train_seconds if cost else None,
    )


def build_comparison(session: Session, experiment: Experiment) -> Comparison:
    every = session.scalars(
        select(Job)
        .where(
            Job.experiment_id == experiment.id,
            Job.role.in_([JobRole.finetune, JobRole.control, JobRole.baseline]),
        )
        .order_by(Job.created_at, Job.id)
    ).all()
    # Layer probes are not strategies: they get their own table (layer_probes), not rows.
    jobs = [j for j in every if not is_probe(j)]
    probes = [j for j in every if is_probe(j)]
    ids = [j.id for j in every]
    # Only the columns a row shows: not the per-class and confusion JSON of every evaluation.
    e, c = Evaluation, Cost
    evaluations = {
        row.job_id: row
        for row in session.execute(select(e.job_id, e.accuracy, e.macro_f1).where(e.job_id.in_(ids)))
    }
    costs = {
        row.job_id: row
        for row in session.execute(
            select(
                c.job_id, c.train_seconds, c.trainable_parameters, c.total_parameters,
                c.parameter_updates, c.peak_memory_bytes, c.memory_device,
            ).where(c.job_id.in_(ids))
        )
    }  # fmt: skip
    last = last_epochs(session, ids)
    succeeded = [j for j in jobs if j.status == JobStatus.succeeded]
    use_val = bool(succeeded) and all((j.id, "val") in last for j in succeeded)
    measure = VAL_MEASURE if use_val else TRAIN_MEASURE
    selection: dict[str, float] = {}

    rows: list[ComparisonRow] = []
    for job in jobs:
        spec, hp = job.spec, job.spec["hyperparameters"]
        # Fine-tunes and controls always have a strategy; a baseline is named after what it reads.
        if job.role == JobRole.baseline:
            strategy, variant, frozen = BASELINE_STRATEGY, BASELINE_STRATEGY, None
        else:
            strategy = job.strategy or spec["strategy"]
            variant = variant_name(strategy, spec.get("frozen_blocks"))
            if spec.get("source_weights"):
                variant += IMAGENET_SUFFIX
            frozen = frozen_blocks_of(strategy, spec.get("frozen_blocks"), job.architecture)
        evaluation, cost = evaluations.get(job.id), costs.get(job.id)
        val = last.get((job.id, "val"))
        train = last.get((job.id, "train"))
        # With early stopping the evaluated weights are the best validation epoch's, not the last's.
        stops_early = hp.get("early_stopping_patience") is not None
        val_accuracy = None if val is None else val.best_accuracy if stops_early else val.accuracy
        if job.status == JobStatus.succeeded:
            if use_val and val_accuracy is not None:
                selection[job.id] = val_accuracy
            elif not use_val and train is not None:
                selection[job.id] = train.accuracy
        rows.append(
            ComparisonRow(
                job_id=job.id,
                role=job.role,
                control=job.role == JobRole.control,
                status=job.status,
                strategy=strategy,
                variant=variant,
                frozen_blocks=frozen,
                optimizer=hp["optimizer"],
                lr=hp["lr"],
                batch_size=hp["batch_size"],
                epochs=hp["epochs"],
                epochs_run=train.epochs if train is not None else None,
                seed=hp.get("seed", 0),
                val_accuracy=val_accuracy,
                test_accuracy=evaluation.accuracy if evaluation else None,
                macro_f1=evaluation.macro_f1 if evaluation else None,
                train_seconds=cost.train_seconds if cost else None,
                trainable_parameters=cost.trainable_parameters if cost else None,
                total_parameters=cost.total_parameters if cost else None,
                parameter_updates=cost.parameter_updates if cost else None,
                peak_memory_bytes=cost.peak_memory_bytes if cost else None,
                memory_device=cost.memory_device if cost else None,
                transfer_gain=None,
                control_job_id=None,
                chosen=False,
                source=None
                if job.role != JobRole.finetune
                else "imagenet"
                if spec.get("source_weights")
                else "pretrained",
            )
        )

    # Each fine-tune's control: the control with the same spec but random_init.
    controls = {_control_key(j.spec): r for j, r in zip(jobs, rows, strict=True) if r.control}
    for job, row in zip(jobs, rows, strict=True):
        if row.control:
            continue
        control = controls.get(_control_key(job.spec))
        if control is not None:
            row.control_job_id = control.job_id
            if row.test_accuracy is not None and control.test_accuracy is not None:
                row.transfer_gain = row.test_accuracy - control.test_accuracy

    summary = summarise(rows, selection)
    best = choose(rows, summary, selection, measure)

    probe_rows = []
    if probes:
        from engine.models import block_names  # imports torch: only for an experiment with probes

        probe_rows = layer_probe_rows(
            probes,
            {i: row.accuracy for i, row in evaluations.items()},
            {i: row.trainable_parameters for i, row in costs.items()},
            {i: m.epochs for (i, phase), m in last.items() if phase == "train"},
            block_names(experiment.architecture),
        )

    return Comparison(
        selection_measure=measure,
        rows=rows,
        summary=summary,
        baselines=against_baselines(rows, summary),
        best=best,
        hyperparameters=_axis_findings(experiment, rows, selection, measure),
        pretrain=pretrain_summary(session, experiment.pretrain_job),
        layer_probes=probe_rows,
    )


def _axis_findings(
    experiment: Experiment, rows: list[ComparisonRow], selection: dict[str, float], measure: str
) -> list[AxisFinding]:
    """For each swept axis (more than one value), the mean selection measure of the fine-tunes with
    each value, over every other setting: which value did best across the grid."""
    request = ExperimentCreate.model_validate(experiment.request)
    findings = []
    for axis in AXES:
        swept = getattr(request.sweep, axis, None) if request.sweep else None
        if not swept or len(swept) < 2:
            continue
        groups: dict[Any, list[float]] = defaultdict(list)
        for row in rows:
            if not row.control and row.job_id in selection:
                groups[getattr(row, axis)].append(selection[row.job_id])
        values = [
            AxisValue(
                value=value,
                runs=len(scores),
                mean_selection_value=sum(scores) / len(scores),
                best_selection_value=max(scores),
            )
            for value, scores in groups.items()
        ]
        if not values:
            continue
        order = {getattr(v, "value", v): i for i, v in enumerate(swept)}
        values.sort(key=lambda v: order.get(v.value, len(order)))
        top = max(values, key=lambda v: v.mean_selection_value)
        findings.append(AxisFinding(axis=axis, measure=measure, values=values, best_value=top.value))
    return findings
