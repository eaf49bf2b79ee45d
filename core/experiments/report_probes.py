"""Section 9's "where the knowledge lives": the layer probes and the transferability curve, in
sentences made from the stored numbers (core.experiments.probes computes them).

    blocks = layer_probe_blocks(f) + transferability_blocks(f)   # f: report._Facts

Two intervals "do not overlap" when the lower end of one lies above the upper end of the other; with
one seed there are no intervals and the report says so instead of declaring a winner. Imported by
core.experiments.report when it builds section 9 (this module uses its blocks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.experiments.plan import linear_epochs
from core.experiments.probes import DepthPoint, partial_depths, transferability_points
from core.experiments.report import Bullets, Heading, Paragraph, Table, with_interval
from core.experiments.schemas import LayerProbeRow
from core.experiments.table import count, pct, points

if TYPE_CHECKING:
    from core.experiments.report import Block, _Facts


def above(mean: float | None, ci95: float | None, other: float | None, other_ci95: float | None) -> bool:
    """Whether the first interval lies wholly above the second (never without both intervals)."""
    if mean is None or other is None or ci95 is None or other_ci95 is None:
        return False
    return mean - ci95 > other + other_ci95


def frozen_words(depth: int) -> str:
    """'1 frozen block', '3 frozen blocks'."""
    return f"{depth} frozen block" + ("" if depth == 1 else "s")


def _cell(mean: float | None, ci95: float | None) -> str:
    return pct(mean) + ("" if ci95 is None else f" ± {100 * ci95:.2f}")


# ---------------------------------------------------------------- layer probes


def layer_probe_blocks(f: _Facts) -> list[Block]:
    """The probes' table, the image, and what they say: the best block, where pre-training beats
    random weights beyond the intervals, and the best probe against the pixel floor."""
    rows = [r for r in f.comparison.layer_probes if r.accuracy_transferred is not None]
    if not f.request.layer_probes:
        return []
    out: list[Block] = [Heading(3, "Layer by layer: linear probes")]
    if not rows:
        return [*out, Paragraph("No layer probe succeeded.")]
    hp = f.request.hyperparameters
    stopping = (
        f", stopping after {hp.early_stopping_patience} epochs without a better validation accuracy"
        if hp.early_stopping_patience is not None
        else ""
    )
    out.append(
        Paragraph(
            "A linear classifier on each block's output, average-pooled to at most 4,096 features, "
            f"trained on {f.target} for up to {linear_epochs(f.request)} epochs{stopping} "
            f"({hp.optimizer.value}, lr {hp.lr:g}), once on the pre-trained extractor and once on its "
            "twin with random weights (same architecture, same seed)."
        )
    )
    out.append(_probe_table(rows))
    out.append(Bullets(_probe_findings(f, rows)))
    image = f.experiment_image("layer_probes.png")
    if image is not None:
        out.append(image)
    return out


def _probe_table(rows: list[LayerProbeRow]) -> Table:
    return Table(
        ["block", "features", "n", "pre-trained", "random init", "gain", "epochs run"],
        [
            [
                f"{r.block} ({r.block_name})",
                count(r.features),
                str(r.n),
                _cell(r.accuracy_transferred, r.accuracy_transferred_ci95),
                _cell(r.accuracy_random, r.accuracy_random_ci95),
                points(r.gain_mean, unit=False)
                + ("" if r.gain_ci95 is None else f" ± {100 * r.gain_ci95:.2f}"),
                "" if r.epochs_run_mean is None else f"{r.epochs_run_mean:.3g}",
            ]
            for r in rows
        ],
    )


def _probe_findings(f: _Facts, rows: list[LayerProbeRow]) -> list[str]:
    best = max(rows, key=lambda r: r.accuracy_transferred or 0.0)
    items = [
        f"The features after block {best.block} ({best.block_name}) probe best: "
        f"{with_interval(best.accuracy_transferred, best.accuracy_transferred_ci95, best.n)} from the "
        f"pre-trained weights."
    ]
    randoms = [r for r in rows if r.accuracy_random is not None]
    if randoms:
        best_random = max(randoms, key=lambda r: r.accuracy_random or 0.0)
        items.append(
            f"With random weights block {best_random.block} ({best_random.block_name}) probes best: "
            f"{with_interval(best_random.accuracy_random, best_random.accuracy_random_ci95, best_random.n)}."
        )
    repeated = [
        r for r in rows if r.accuracy_transferred_ci95 is not None and r.accuracy_random_ci95 is not None
    ]
    if not repeated:
        gains = ", ".join(f"{r.block_name} {points(r.gain_mean)}" for r in rows if r.gain_mean is not None)
        items.append(
            f"One seed: no intervals, so no block is said to beat random weights (differences: {gains})."
        )
    else:
        ours = {r.block: (r.accuracy_transferred, r.accuracy_transferred_ci95) for r in repeated}
        theirs = {r.block: (r.accuracy_random, r.accuracy_random_ci95) for r in repeated}
        wins = [r for r in repeated if above(*ours[r.block], *theirs[r.block])]
        losses = [r for r in repeated if above(*theirs[r.block], *ours[r.block])]
        if wins:
            named = ", ".join(f"{r.block_name} ({points(r.gain_mean)})" for r in wins)
            items.append(
                f"Pre-trained features beat random ones with non-overlapping 95% intervals after {named}."
            )
        else:
            items.append(
                "At no block do the pre-trained features beat random ones with non-overlapping 95% intervals."
            )
        if losses:
            named = ", ".join(f"{r.block_name} ({points(r.gain_mean)})" for r in losses)
            items.append(f"Random features beat the pre-trained ones beyond the intervals after {named}.")
    floor = next((s for s in f.comparison.summary if s.role == "baseline" and s.chosen), None)
    if floor is not None and floor.test_accuracy_mean is not None:
        text = (
            f"The best probe against the pixels baseline "
            f"({with_interval(floor.test_accuracy_mean, floor.test_accuracy_ci95, floor.n)}): "
        )
        if above(best.accuracy_transferred, best.accuracy_transferred_ci95, floor.test_accuracy_mean,
                 floor.test_accuracy_ci95):  # fmt: skip
            text += "above it beyond the intervals, so these features carry more than the raw pixels."
        elif above(floor.test_accuracy_mean, floor.test_accuracy_ci95, best.accuracy_transferred,
                   best.accuracy_transferred_ci95):  # fmt: skip
            text += (
                f"below it beyond the intervals: no block's features learnt from {f.source} beat the raw "
                f"pixels of {f.target} for a linear classifier."
            )
        else:
            text += "the intervals overlap (or there are none), so neither is shown to be better."
        items.append(text)
    return items


# ---------------------------------------------------------------- the transferability curve


def transferability_blocks(f: _Facts) -> list[Block]:
    """The curve's table and image, and where freezing more blocks starts to cost accuracy."""
    if len(partial_depths(f.comparison)) < 2:
        return []
    from engine.strategies import block_count  # the architecture's blocks: engine.models knows them

    blocks = block_count(f.experiment.architecture)
    curve = [p for p in transferability_points(f.comparison, blocks) if p.transferred is not None]
    out: list[Block] = [Heading(3, "Transferability by depth (Yosinski et al., 2014)")]
    if not curve:
        return [*out, Paragraph("No run of the curve succeeded.")]
    out.append(
        Paragraph(
            f"Test accuracy against the number of frozen leading blocks (of {blocks}): full fine-tuning "
            f"at 0 (its extractor at a lower learning rate), partial in between, the linear probe at "
            f"{blocks}; each with its chosen hyperparameters and its control from random weights."
        )
    )
    out.append(
        Table(
            ["frozen blocks", "variant", "n", "transferred", "control"],
            [
                [
                    str(p.depth),
                    p.variant,
                    str(p.n),
                    _cell(p.transferred, p.transferred_ci95),
                    _cell(p.control, p.control_ci95),
                ]  # fmt: skip
                for p in curve
            ],
        )
    )
    out.append(Bullets(_curve_findings(f, curve)))
    image = f.experiment_image("transferability.png")
    if image is not None:
        out.append(image)
    return out


def _tolerance(f: _Facts, best: DepthPoint) -> tuple[float, str]:
    """How far below the best depth an accuracy may lie and still count as no cost: the best's 95%
    interval with repeats, else two standard errors of the test split."""
    if best.transferred_ci95 is not None:
        return best.transferred_ci95, "its 95% interval"
    from core.experiments.report import standard_error

    n = f.test_images or 0
    return 2 * standard_error(best.transferred or 0.0, n) if n else 0.0, "two standard errors"


def _curve_findings(f: _Facts, curve: list[DepthPoint]) -> list[str]:
    best = max(curve, key=lambda p: p.transferred or 0.0)
    tolerance, what = _tolerance(f, best)
    items = [
        f"Best at {frozen_words(best.depth)} ({best.variant}): "
        f"{with_interval(best.transferred, best.transferred_ci95, best.n)}."
    ]
    floor = (best.transferred or 0.0) - tolerance
    costly = next((p for p in curve if p.depth > best.depth and (p.transferred or 0.0) < floor), None)
    if costly is None:
        items.append(
            f"Freezing more than the best's {frozen_words(best.depth)} costs no accuracy beyond {what} "
            f"({100 * tolerance:.2f} points), up to the deepest depth run."
        )
    else:
        kept = [p.depth for p in curve if best.depth <= p.depth < costly.depth]
        items.append(
            f"Freezing up to {max(kept)} blocks stays within {what} of the best ({100 * tolerance:.2f} "
            f"points); at {frozen_words(costly.depth)} ({costly.variant}) freezing starts to cost accuracy: "
            f"{points((costly.transferred or 0.0) - (best.transferred or 0.0))}."
        )
    repeated = [p for p in curve if p.transferred_ci95 is not None and p.control_ci95 is not None]
    if repeated:
        wins = [p for p in repeated if above(p.transferred, p.transferred_ci95, p.control, p.control_ci95)]
        if wins:
            depths = ", ".join(
                f"{frozen_words(p.depth)} ({points((p.transferred or 0.0) - (p.control or 0.0))})"
                for p in wins
            )
            items.append(f"Transferred beats its control with non-overlapping 95% intervals at {depths}.")
        else:
            items.append("At no depth does transferred beat its control with non-overlapping 95% intervals.")
    else:
        items.append("One seed: no intervals, so no depth is said to beat its control.")
    return items
