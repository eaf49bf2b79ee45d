"""Where the knowledge lives: the layer probes' table and the transferability curve's points.

Layer probes are fine-tune and control jobs whose spec has a `probe_block` (core.experiments.plan
plans them); the comparison leaves them out of its rows and gets one LayerProbeRow per block here:
the pre-trained probe's and the random twin's mean test accuracy with their intervals, and the gain
paired by seed. The transferability curve (Yosinski et al., 2014) reads the comparison's summary:
test accuracy against the number of frozen blocks, for the transferred runs and their controls,
with full as depth 0 and linear as depth `blocks` when the experiment ran them.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from core.experiments.schemas import Comparison, LayerProbeRow, SummaryRow
from core.experiments.stats import mean_ci95
from core.models import Job, JobRole, JobStatus

CLASSES = 10  # every target data set has 10 classes: a probe's Linear layer has features x 10 + 10


def is_probe(job: Job) -> bool:
    """A layer probe's job (its spec names the block it reads)."""
    return job.spec.get("probe_block") is not None


def layer_probe_rows(
    jobs: list[Job],
    accuracy: Mapping[str, float],
    trainable: Mapping[str, int],
    epochs_run: Mapping[str, int],
    block_names: tuple[str, ...],
) -> list[LayerProbeRow]:
    """One row per probed block, in block order, from the probe jobs and their stored results (test
    accuracy, trainable parameters and epochs run, by job id)."""
    by_block: dict[int, list[Job]] = defaultdict(list)
    for job in jobs:
        by_block[int(job.spec["probe_block"])].append(job)
    rows = []
    for block in sorted(by_block):
        group = by_block[block]
        done = [j for j in group if j.status == JobStatus.succeeded and j.id in accuracy]
        ours = {_seed(j): accuracy[j.id] for j in done if j.role == JobRole.finetune}
        random = {_seed(j): accuracy[j.id] for j in done if j.role == JobRole.control}
        paired = sorted(ours.keys() & random.keys())
        transferred, twin = mean_ci95(list(ours.values())), mean_ci95(list(random.values()))
        gain = mean_ci95([ours[s] - random[s] for s in paired])
        params = next((trainable[j.id] for j in done if j.id in trainable), None)
        epochs = [epochs_run[j.id] for j in done if j.id in epochs_run]
        rows.append(
            LayerProbeRow(
                block=block,
                block_name=block_names[block] if block < len(block_names) else str(block),
                features=None if params is None else params // CLASSES - 1,
                n=len(paired),
                accuracy_transferred=transferred.mean,
                accuracy_transferred_ci95=transferred.ci95,
                accuracy_random=twin.mean,
                accuracy_random_ci95=twin.ci95,
                gain_mean=gain.mean,
                gain_ci95=gain.ci95,
                epochs_run_mean=statistics.fmean(epochs) if epochs else None,
                job_ids=[j.id for j in group],
            )
        )
    return rows


def _seed(job: Job) -> int:
    return int(job.spec["hyperparameters"].get("seed", 0))


@dataclass(frozen=True)
class DepthPoint:
    """One depth of the transferability curve: the chosen hyperparameters' runs frozen this deep."""

    depth: int  # frozen blocks: 0 (full) .. blocks (linear)
    variant: str
    transferred: float | None  # mean test accuracy from the pre-trained weights
    transferred_ci95: float | None
    control: float | None  # mean test accuracy of the controls (random weights)
    control_ci95: float | None
    n: int


def depth_of(variant: str, blocks: int) -> int | None:
    """Frozen blocks of a variant on the curve: full 0, partial-k k, linear `blocks`; else None."""
    if variant == "full":
        return 0
    if variant == "linear":
        return blocks
    if variant.startswith("partial-"):
        return int(variant.removeprefix("partial-"))
    return None


def partial_depths(comparison: Comparison) -> set[int]:
    """The depths at which the experiment ran partial."""
    return {
        r.frozen_blocks for r in comparison.rows if r.strategy == "partial" and r.frozen_blocks is not None
    }


def transferability_points(comparison: Comparison, blocks: int) -> list[DepthPoint]:
    """The curve, by depth: each variant's chosen fine-tune group and its control at the same
    hyperparameters (so both lines share the learning rate, batch size and optimiser at each depth)."""
    controls: dict[tuple, SummaryRow] = {
        (s.variant, s.optimizer, s.lr, s.batch_size): s for s in comparison.summary if s.role == "control"
    }
    points = []
    for s in comparison.summary:
        depth = depth_of(s.variant, blocks)
        if not s.chosen or s.role != "finetune" or depth is None:
            continue
        control = controls.get((s.variant, s.optimizer, s.lr, s.batch_size))
        points.append(
            DepthPoint(
                depth=depth,
                variant=s.variant,
                transferred=s.test_accuracy_mean,
                transferred_ci95=s.test_accuracy_ci95,
                control=control.test_accuracy_mean if control else None,
                control_ci95=control.test_accuracy_ci95 if control else None,
                n=s.n,
            )
        )
    return sorted(points, key=lambda p: p.depth)
