"""The comparison table of an experiment, from its stored rows only (jobs, epochs, evaluations, costs).

Choosing follows the usual rule: hyperparameters are chosen on the validation split (accuracy after
the last epoch), and the test split only reports the chosen runs. Per strategy variant the chosen run
is the one with the best selection measure (ties: the faster run); the best strategy is the chosen run
with the best selection measure. A fine-tune's transfer gain is its test accuracy minus its control's:
the run with the same spec but random_init, so the gain is what pre-training contributed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.experiments.schemas import (
    AxisFinding,
    AxisValue,
    BestStrategy,
    Comparison,
    ComparisonRow,
    ExperimentCreate,
    PretrainSummary,
)
from core.models import Cost, EpochMetric, Evaluation, Experiment, Job, JobRole, JobStatus
from engine.strategies import frozen_blocks_of, variant_name

VAL_MEASURE = "validation accuracy (last epoch)"
TRAIN_MEASURE = "training accuracy (last epoch; the runs have no validation split)"
AXES = ("lr", "batch_size", "optimizer")


def per_class(evaluation: Evaluation) -> list[dict[str, Any]]:
    """Its per-class rows: {label, precision, recall, f1, support}, in class order."""
    return list(evaluation.per_class)


def images_tested(evaluation: Evaluation) -> int:
    """Images it was tested on: the sum of the per-class support."""
    return sum(c["support"] for c in per_class(evaluation))


def last_epochs(session: Session, job_ids: list[str]) -> dict[tuple[str, str], EpochMetric]:
    """(job id, phase) -> the row of its last epoch."""
    last: dict[tuple[str, str], EpochMetric] = {}
    if not job_ids:
        return last
    for row in session.scalars(
        select(EpochMetric).where(EpochMetric.job_id.in_(job_ids)).order_by(EpochMetric.epoch)
    ):
        last[(row.job_id, row.phase)] = row
    return last


def _control_key(spec: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in spec.items() if k != "random_init"}, sort_keys=True)


def images_seen(metric: EpochMetric | None) -> int | None:
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
    jobs = session.scalars(
        select(Job)
        .where(Job.experiment_id == experiment.id, Job.role.in_([JobRole.finetune, JobRole.control]))
        .order_by(Job.created_at, Job.id)
    ).all()
    ids = [j.id for j in jobs]
    evaluations = {e.job_id: e for e in session.scalars(select(Evaluation).where(Evaluation.job_id.in_(ids)))}
    costs = {c.job_id: c for c in session.scalars(select(Cost).where(Cost.job_id.in_(ids)))}
    last = last_epochs(session, ids)
    succeeded = [j for j in jobs if j.status == JobStatus.succeeded]
    use_val = bool(succeeded) and all((j.id, "val") in last for j in succeeded)
    measure = VAL_MEASURE if use_val else TRAIN_MEASURE
    selection: dict[str, float] = {}

    rows: list[ComparisonRow] = []
    for job in jobs:
        spec, hp = job.spec, job.spec["hyperparameters"]
        strategy: str = job.strategy or spec["strategy"]  # fine-tunes and controls always have one
        evaluation, cost = evaluations.get(job.id), costs.get(job.id)
        val = last.get((job.id, "val"))
        train = last.get((job.id, "train"))
        if job.status == JobStatus.succeeded:
            chosen_metric = val if use_val else train
            if chosen_metric is not None:
                selection[job.id] = chosen_metric.accuracy
        rows.append(
            ComparisonRow(
                job_id=job.id,
                role=job.role,
                control=job.role == JobRole.control,
                status=job.status,
                strategy=strategy,
                variant=variant_name(strategy, spec.get("frozen_blocks")),
                frozen_blocks=frozen_blocks_of(strategy, spec.get("frozen_blocks"), job.architecture),
                optimizer=hp["optimizer"],
                lr=hp["lr"],
                batch_size=hp["batch_size"],
                epochs=hp["epochs"],
                val_accuracy=val.accuracy if val is not None else None,
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

    # Per variant, the fine-tune with the best selection measure (ties: the faster one).
    by_variant: dict[str, list[ComparisonRow]] = defaultdict(list)
    for row in rows:
        if not row.control and row.job_id in selection:
            by_variant[row.variant].append(row)
    best: BestStrategy | None = None
    for candidates in by_variant.values():
        pick = max(candidates, key=lambda r: (selection[r.job_id], -(r.train_seconds or 0.0)))
        pick.chosen = True
        if best is None or selection[pick.job_id] > best.selection_value:
            best = BestStrategy(
                variant=pick.variant,
                strategy=pick.strategy,
                job_id=pick.job_id,
                measure=measure,
                selection_value=selection[pick.job_id],
                test_accuracy=pick.test_accuracy,
                macro_f1=pick.macro_f1,
                transfer_gain=pick.transfer_gain,
            )

    return Comparison(
        selection_measure=measure,
        rows=rows,
        best=best,
        hyperparameters=_axis_findings(experiment, rows, selection, measure),
        pretrain=pretrain_summary(session, experiment.pretrain_job),
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
