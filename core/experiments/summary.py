"""The experiment's summary over seeds, and the choice made on it.

Runs are grouped by (variant, role, optimizer, lr, batch size): the repeats of one grid point, which
differ only in their seed. Each group gets means with 95% t-intervals (core.experiments.stats); a
fine-tune group also gets its paired transfer gain. Per variant the fine-tune group with the best mean
selection measure is chosen (ties: the faster on average), and its run at the first seed stands for
the variant in the comparison's rows (`chosen`), so the per-run tables (matrices, per-class F1) show
one run each. With one repeat this is the single-run rule of core.experiments.compare.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from core.experiments.schemas import BaselineComparison, BestStrategy, ComparisonRow, SummaryRow
from core.experiments.stats import MeanInterval, mean_ci95
from core.models import JobStatus

GroupKey = tuple[str, str, str, float, int]


def group_key(row: ComparisonRow) -> GroupKey:
    return (row.variant, row.role, row.optimizer, row.lr, row.batch_size)


def _values(rows: list[ComparisonRow], field: str) -> list[float]:
    return [v for r in rows if (v := getattr(r, field)) is not None]


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarise(rows: list[ComparisonRow], selection: dict[str, float]) -> list[SummaryRow]:
    """One row per group, in the order the groups first appear; `chosen` set per variant."""
    groups: dict[GroupKey, list[ComparisonRow]] = defaultdict(list)
    for row in rows:
        groups[group_key(row)].append(row)
    summary = [_summary_row(group) for group in groups.values()]
    _mark_chosen(summary, groups, selection)
    return summary


def _summary_row(group: list[ComparisonRow]) -> SummaryRow:
    first = group[0]
    done = [r for r in group if r.status == JobStatus.succeeded and r.test_accuracy is not None]
    test = mean_ci95(_values(done, "test_accuracy"))
    f1 = mean_ci95(_values(done, "macro_f1"))
    seconds = mean_ci95(_values(done, "train_seconds"))
    gain: MeanInterval | None = None
    if not first.control:
        gains = _values(done, "transfer_gain")
        gain = mean_ci95(gains) if gains else None
    return SummaryRow(
        variant=first.variant,
        strategy=first.strategy,
        role=first.role,
        optimizer=first.optimizer,
        lr=first.lr,
        batch_size=first.batch_size,
        n=len(done),
        seeds=[r.seed for r in done],
        job_ids=[r.job_id for r in group],
        val_accuracy_mean=_mean(_values(done, "val_accuracy")),
        test_accuracy_mean=test.mean,
        test_accuracy_ci95=test.ci95,
        macro_f1_mean=f1.mean,
        macro_f1_ci95=f1.ci95,
        train_seconds_mean=seconds.mean,
        train_seconds_ci95=seconds.ci95,
        epochs_run_mean=_mean([float(v) for v in _values(done, "epochs_run")]),
        transfer_gain_mean=gain.mean if gain else None,
        transfer_gain_ci95=gain.ci95 if gain else None,
        transfer_measured=None if gain is None or gain.ci95 is None else not gain.contains_zero(),
        chosen=False,
    )


def _mark_chosen(
    summary: list[SummaryRow], groups: dict[GroupKey, list[ComparisonRow]], selection: dict[str, float]
) -> None:
    best_of_variant: dict[str, tuple[tuple[float, float], SummaryRow]] = {}
    for entry, group in zip(summary, groups.values(), strict=True):
        if entry.role == "control":
            continue
        scores = [selection[r.job_id] for r in group if r.job_id in selection]
        if not scores:
            continue
        key = (statistics.fmean(scores), -(entry.train_seconds_mean or 0.0))
        if entry.variant not in best_of_variant or key > best_of_variant[entry.variant][0]:
            best_of_variant[entry.variant] = (key, entry)
    for _, entry in best_of_variant.values():
        entry.chosen = True


def choose(
    rows: list[ComparisonRow], summary: list[SummaryRow], selection: dict[str, float], measure: str
) -> BestStrategy | None:
    """Mark each chosen group's first-seed run `chosen`; the best variant by mean selection measure."""
    by_id = {r.job_id: r for r in rows}
    best: BestStrategy | None = None
    for entry in summary:
        if not entry.chosen or entry.role != "finetune":
            continue
        selected = [by_id[j] for j in entry.job_ids if j in selection]
        stand_in = min(selected, key=lambda r: r.seed)
        stand_in.chosen = True
        value = statistics.fmean(selection[r.job_id] for r in selected)
        if best is None or value > best.selection_value:
            best = BestStrategy(
                variant=entry.variant,
                strategy=entry.strategy,
                job_id=stand_in.job_id,
                measure=measure if len(selected) == 1 else f"mean {measure} over {len(selected)} seeds",
                selection_value=value,
                test_accuracy=entry.test_accuracy_mean,
                macro_f1=entry.macro_f1_mean,
                transfer_gain=entry.transfer_gain_mean,
                n=entry.n,
                test_accuracy_ci95=entry.test_accuracy_ci95,
                transfer_gain_ci95=entry.transfer_gain_ci95,
            )
    return best


def against_baselines(rows: list[ComparisonRow], summary: list[SummaryRow]) -> list[BaselineComparison]:
    """Each chosen fine-tune group against each chosen baseline group, paired by seed."""
    by_id = {r.job_id: r for r in rows}

    def accuracy_by_seed(entry: SummaryRow) -> dict[int, float]:
        runs = [by_id[j] for j in entry.job_ids]
        return {
            r.seed: r.test_accuracy
            for r in runs
            if r.status == JobStatus.succeeded and r.test_accuracy is not None
        }

    chosen = [s for s in summary if s.chosen]
    out = []
    for baseline in (s for s in chosen if s.role == "baseline"):
        floor = accuracy_by_seed(baseline)
        for entry in (s for s in chosen if s.role == "finetune"):
            ours = accuracy_by_seed(entry)
            interval = mean_ci95([ours[seed] - floor[seed] for seed in sorted(ours.keys() & floor.keys())])
            beats = None
            if interval.ci95 is not None and interval.mean is not None:
                beats = interval.mean - interval.ci95 > 0
            out.append(
                BaselineComparison(
                    variant=entry.variant,
                    baseline=baseline.variant,
                    n=interval.n,
                    difference_mean=interval.mean,
                    difference_ci95=interval.ci95,
                    beats=beats,
                )
            )
    return out
