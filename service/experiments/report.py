"""The experiment report, in Markdown or self-contained HTML, following the seed's sections 6-10.

Every sentence with a number in it is made here from stored rows (the comparison, evaluations,
costs, epoch metrics, jobs); none is written by hand. The report is built once as a list of blocks
and rendered twice: Markdown links the plots by URL, HTML embeds them as data URIs.

    blocks = build_report(session, experiment)
    to_markdown(blocks)   /   to_html(blocks, title, settings)
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.artifacts import EXPERIMENT_ARTIFACTS, artifact_file
from service.config import Settings
from service.experiments.compare import VAL_MEASURE, build_comparison
from service.experiments.schemas import Comparison, ComparisonRow, ExperimentCreate
from service.models import Artifact, Evaluation, Experiment, Job, JobRole, JobStatus, utcnow

# The official labelled splits (seed section 2; CIFAR-10 and Fashion-MNIST from their papers).
OFFICIAL_SIZES = {
    "stl10": {"train": 5000, "test": 8000},
    "mnist": {"train": 60000, "test": 10000},
    "fashion_mnist": {"train": 60000, "test": 10000},
    "cifar10": {"train": 50000, "test": 10000},
}
DATASET_NAMES = {"stl10": "STL-10", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
_FRACTION_WORDS = {
    Fraction(1): "all",
    Fraction(1, 2): "a half",
    Fraction(1, 3): "a third",
    Fraction(1, 4): "a quarter",
    Fraction(1, 5): "a fifth",
    Fraction(1, 10): "a tenth",
    Fraction(1, 20): "a twentieth",
}
WEAK_SOURCE_ACCURACY = 0.5  # below this the pre-trained model is called weak in the limitations


# ---------------------------------------------------------------- blocks


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    title: str
    url: str  # where the API serves it
    artifact: Artifact | None = field(default=None, repr=False)  # for embedding


Block = Heading | Paragraph | Bullets | Table | Image


# ---------------------------------------------------------------- numbers as words


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def points(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f} points"


def seconds(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f} s"


def count(x: int | None) -> str:
    return "n/a" if x is None else f"{x:,}"


def mib(x: int | None) -> str:
    return "n/a" if x is None else f"{x / 2**20:,.0f} MiB"


def share_words(part: int, whole: int) -> str:
    """'20% (a fifth) of the official 5,000'."""
    words = _FRACTION_WORDS.get(Fraction(part, whole))
    words = f" ({words})" if words else ""
    return f"{100 * part / whole:.0f}%{words} of the official {count(whole)}"


def dataset_name(name: str) -> str:
    return DATASET_NAMES.get(name, name)


def standard_error(accuracy: float, n: int) -> float:
    """Binomial standard error of an accuracy measured on n independent test images."""
    return math.sqrt(max(accuracy * (1 - accuracy), 1e-12) / n) if n else float("nan")


# ---------------------------------------------------------------- building


def _job_image(
    job_id: str, name: str, title: str, artifacts: dict[tuple[str, str], Artifact]
) -> Image | None:
    artifact = artifacts.get((job_id, name))
    if artifact is None:
        return None
    return Image(title, f"/jobs/{job_id}/artifacts/{name}", artifact)


def _run_name(row: ComparisonRow) -> str:
    return f"{row.variant} ({row.optimizer}, lr {row.lr:g}, batch {row.batch_size})"


def _all_runs_table(comparison: Comparison) -> Table:
    header = [
        "job", "role", "variant", "frozen blocks", "optimiser", "lr", "batch", "status", "val acc",
        "test acc", "macro F1", "train time", "trainable params", "param updates", "peak memory",
        "transfer gain", "chosen",
    ]  # fmt: skip
    rows = [
        [
            r.job_id[:8],
            r.role,
            r.variant,
            "n/a" if r.frozen_blocks is None else str(r.frozen_blocks),
            r.optimizer,
            f"{r.lr:g}",
            str(r.batch_size),
            r.status,
            pct(r.val_accuracy),
            pct(r.test_accuracy),
            "n/a" if r.macro_f1 is None else f"{r.macro_f1:.4f}",
            seconds(r.train_seconds),
            count(r.trainable_parameters),
            count(r.parameter_updates),
            mib(r.peak_memory_bytes),
            points(r.transfer_gain) if not r.control else "",
            "yes" if r.chosen else "",
        ]
        for r in comparison.rows
    ]
    return Table(header, rows)


def build_report(session: Session, experiment: Experiment) -> list[Block]:
    comparison = build_comparison(session, experiment)
    request = ExperimentCreate.model_validate(experiment.request)
    rows = comparison.rows
    by_id = {r.job_id: r for r in rows}
    chosen = [r for r in rows if r.chosen]
    evaluations = {
        e.job_id: e
        for e in session.scalars(select(Evaluation).where(Evaluation.job_id.in_([r.job_id for r in rows])))
    }
    owners = [r.job_id for r in rows] + [experiment.pretrain_job_id or ""]
    artifacts = {
        (a.job_id, a.name): a for a in session.scalars(select(Artifact).where(Artifact.job_id.in_(owners)))
    }
    experiment_artifacts = {
        a.name: a for a in session.scalars(select(Artifact).where(Artifact.experiment_id == experiment.id))
    }
    jobs = session.scalars(select(Job).where(Job.experiment_id == experiment.id)).all()
    pretrain = comparison.pretrain
    source, target = dataset_name(pretrain.dataset if pretrain else "?"), dataset_name(experiment.dataset)
    measure = comparison.selection_measure

    def experiment_image(name: str) -> Image | None:
        artifact = experiment_artifacts.get(name)
        if artifact is None:
            return None
        return Image(EXPERIMENT_ARTIFACTS[name], f"/experiments/{experiment.id}/artifacts/{name}", artifact)

    out: list[Block] = [Heading(1, f"{experiment.name}: transfer from {source} to {target}")]

    # ------------------------------------------------------------ status and set-up
    states: dict[str, int] = {}
    for job in jobs:
        states[job.status] = states.get(job.status, 0) + 1
    tally = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    out.append(
        Paragraph(
            f"Experiment {experiment.id}, {experiment.status}: {len(jobs)} jobs ({tally}). "
            f"Generated {utcnow():%Y-%m-%d %H:%M} UTC from the stored results."
        )
    )
    if experiment.status != "succeeded":
        out.append(
            Paragraph(
                f"This report is partial: the experiment ended {experiment.status}"
                + (f" ({experiment.error})" if experiment.error else "")
                + ". Only jobs that succeeded contribute numbers."
            )
        )

    out.append(Heading(2, "Set-up"))
    setup: list[str] = []
    if pretrain is not None:
        pre_job = experiment.pretrain_job
        hp = pre_job.spec["hyperparameters"]
        reused = " (reused from an earlier job)" if pre_job.experiment_id != experiment.id else ""
        line = (
            f"Pre-training{reused}: {pretrain.architecture} on {source} for {pretrain.epochs} epochs at "
            f"{pretrain.image_size}x{pretrain.image_size} pixels, {hp['optimizer']} at lr {hp['lr']:g}, "
            f"batch {hp['batch_size']}"
        )
        if pretrain.train_images is not None:
            line += (
                f"; {count(pretrain.train_images)} training and {count(pretrain.val_images)} "
                "validation images"
            )
        if pretrain.test_accuracy is not None:
            line += (
                f"; test accuracy {pct(pretrain.test_accuracy)} on {count(pretrain.test_images)} "
                f"{source} test images"
            )
        setup.append(line + ".")
    hp = request.hyperparameters
    sample = next((r for r in rows if r.status == JobStatus.succeeded), None)
    sizes = ""
    if sample is not None:
        train_rows = _phase_images(session, sample.job_id)
        if train_rows:
            sizes = f", {count(train_rows[0])} training and {count(train_rows[1])} validation images"
    strategies = ", ".join(dict.fromkeys(r.variant for r in rows if not r.control)) or "none"
    setup.append(
        f"Fine-tuning on {target} at {request.data.image_size}x{request.data.image_size} pixels for "
        f"{hp.epochs} epochs{sizes}; strategies: {strategies}; "
        f"{len([r for r in rows if not r.control])} fine-tunes"
        + (
            f" and {len([r for r in rows if r.control])} controls from random weights"
            if request.controls
            else ""
        )
        + "."
    )
    setup.append(
        f"Hyperparameters are chosen per strategy on {measure}; test accuracy is reported for those."
    )
    out.append(Bullets(setup))

    # ------------------------------------------------------------ 6. metrics
    out.append(Heading(2, "Model evaluation (seed section 6)"))
    if not chosen:
        out.append(Paragraph("No fine-tune succeeded: there are no metrics to compare."))
    else:
        out.append(
            Table(
                ["strategy", "chosen hyperparameters", "val acc", "test acc", "macro F1", "weighted F1"],
                [
                    [
                        r.variant,
                        f"{r.optimizer}, lr {r.lr:g}, batch {r.batch_size}",
                        pct(r.val_accuracy),
                        pct(r.test_accuracy),
                        f"{r.macro_f1:.4f}",
                        f"{evaluations[r.job_id].weighted_f1:.4f}",
                    ]
                    for r in chosen
                ],
            )
        )
        classes = [c["label"] for c in evaluations[chosen[0].job_id].per_class]
        out.append(Paragraph("Per-class F1 on the test split, for each strategy's chosen run:"))
        out.append(
            Table(
                ["class", *[r.variant for r in chosen]],
                [
                    [label, *[f"{evaluations[r.job_id].per_class[i]['f1']:.3f}" for r in chosen]]
                    for i, label in enumerate(classes)
                ],
            )
        )
        best_row = by_id[comparison.best.job_id]
        best_eval = evaluations[best_row.job_id]
        out.append(
            Paragraph(f"Precision, recall and F1 per class for the best strategy, {best_row.variant}:")
        )
        out.append(
            Table(
                ["class", "precision", "recall", "F1", "support"],
                [
                    [
                        c["label"],
                        f"{c['precision']:.3f}",
                        f"{c['recall']:.3f}",
                        f"{c['f1']:.3f}",
                        str(c["support"]),
                    ]
                    for c in best_eval.per_class
                ],
            )
        )
        worst = min(best_eval.per_class, key=lambda c: c["f1"])
        confused = _most_confused(best_eval)
        sentence = f"Its weakest class is {worst['label']} (F1 {worst['f1']:.3f})"
        if confused:
            true, pred, n = confused
            sentence += f"; its most frequent confusion is {true} taken for {pred} ({n} test images)"
        out.append(Paragraph(sentence + "."))
        images = [experiment_image("per_class_f1.png")]
        images += [
            _job_image(r.job_id, "confusion_matrix.png", f"Confusion matrix: {r.variant}", artifacts)
            for r in chosen
        ]
        best_id, best_name = best_row.job_id, best_row.variant
        images += [
            _job_image(best_id, "correct.png", f"Correctly classified: {best_name}", artifacts),
            _job_image(best_id, "misclassified.png", f"Misclassified: {best_name}", artifacts),
        ]
        for image in images:
            if image is not None:
                out.append(image)

    # ------------------------------------------------------------ 7. efficiency
    out.append(Heading(2, "Computational efficiency (seed section 7)"))
    if chosen:
        out.append(
            Table(
                [
                    "strategy",
                    "train time",
                    "trainable params",
                    "share trained",
                    "param updates",
                    "peak memory",
                ],
                [
                    [
                        r.variant,
                        seconds(r.train_seconds),
                        count(r.trainable_parameters),
                        f"{100 * r.trainable_parameters / r.total_parameters:.1f}%",
                        count(r.parameter_updates),
                        f"{mib(r.peak_memory_bytes)} ({r.memory_device})",
                    ]
                    for r in chosen
                ],
            )
        )
        fast = min(chosen, key=lambda r: r.train_seconds)
        slow = max(chosen, key=lambda r: r.train_seconds)
        sentences = [
            f"{fast.variant} trained fastest ({seconds(fast.train_seconds)}) and {slow.variant} slowest "
            f"({seconds(slow.train_seconds)}, {slow.train_seconds / max(fast.train_seconds, 1e-9):.1f} times "
            "as long)."
        ]
        few = min(chosen, key=lambda r: r.parameter_updates)
        many = max(chosen, key=lambda r: r.parameter_updates)
        if many.parameter_updates and few.job_id != many.job_id:
            sentences.append(
                f"{few.variant} made {count(few.parameter_updates)} parameter updates, "
                f"{many.parameter_updates / max(few.parameter_updates, 1):,.0f} times fewer than "
                f"{many.variant} ({count(many.parameter_updates)})."
            )
        devices = {r.memory_device for r in chosen}
        if devices == {"cpu"}:
            sentences.append(
                "Peak memory is the worker process's peak resident set size on the CPU: it includes the "
                "data set and the libraries, so it varies less between strategies than the trained "
                "parameters do."
            )
        out.append(Paragraph(" ".join(sentences)))
        for name in ("accuracy_vs_time.png", "accuracy_vs_parameters.png"):
            image = experiment_image(name)
            if image is not None:
                out.append(image)
    else:
        out.append(Paragraph("No fine-tune succeeded: there is no cost to compare."))

    # ------------------------------------------------------------ 8. hyperparameters
    out.append(Heading(2, "Hyperparameter tuning (seed section 8)"))
    if comparison.hyperparameters:
        items = []
        for finding in comparison.hyperparameters:
            parts = [
                f"{_axis_value(finding.axis, v.value)}: mean {pct(v.mean_selection_value)}, best "
                f"{pct(v.best_selection_value)} over {v.runs} runs"
                for v in finding.values
            ]
            items.append(
                f"{_AXIS_NAMES[finding.axis]}: best {_axis_value(finding.axis, finding.best_value)} by mean "
                f"{finding.measure} ({'; '.join(parts)})."
            )
        out.append(Bullets(items))
        out.append(
            Paragraph(
                "Chosen per strategy: "
                + "; ".join(f"{r.variant}: {r.optimizer}, lr {r.lr:g}, batch {r.batch_size}" for r in chosen)
                + "."
            )
        )
    else:
        out.append(
            Paragraph(
                f"No sweep was requested: every fine-tune used {hp.optimizer.value} at lr {hp.lr:g} with "
                f"batch {hp.batch_size}."
            )
        )
    out.append(Paragraph("Every run (controls start from random weights; gains are in test accuracy):"))
    out.append(_all_runs_table(comparison))

    # ------------------------------------------------------------ 9. transfer, best strategy
    out.append(Heading(2, f"How much of {source} transfers (seed section 9)"))
    test_images = _test_images(evaluations, chosen)
    noise = None
    if chosen and test_images:
        mean_acc = sum(r.test_accuracy for r in chosen) / len(chosen)
        noise = 2 * math.sqrt(2) * standard_error(mean_acc, test_images)
    gains = [r for r in chosen if r.transfer_gain is not None]
    if not request.controls:
        out.append(Paragraph("No controls were requested, so the transfer cannot be measured."))
    elif not gains:
        out.append(Paragraph("No fine-tune has a succeeded control to compare with."))
    else:
        items = [
            f"{r.variant}: {pct(r.test_accuracy)} from the pre-trained weights, "
            f"{pct(by_id[r.control_job_id].test_accuracy)} from random weights: {points(r.transfer_gain)}."
            for r in gains
        ]
        out.append(Bullets(items))
        top = max(gains, key=lambda r: r.transfer_gain)
        low = min(gains, key=lambda r: r.transfer_gain)
        text = f"Pre-training helped {top.variant} most ({points(top.transfer_gain)})"
        if low.job_id != top.job_id:
            text += f" and {low.variant} least ({points(low.transfer_gain)})"
        text += "."
        if noise is not None:
            within = [r.variant for r in gains if abs(r.transfer_gain) < noise]
            text += (
                f" With {count(test_images)} test images a difference of two accuracies below about "
                f"{100 * noise:.2f} points is within two standard errors"
            )
            text += f", which holds for {', '.join(within)}." if within else "; every gain here is larger."
        out.append(Paragraph(text))

    out.append(Heading(2, "Best strategy"))
    best = comparison.best
    if best is None:
        out.append(Paragraph("None: no fine-tune succeeded."))
    else:
        row = by_id[best.job_id]
        text = (
            f"By {best.measure}, the best strategy is {best.variant} ({pct(best.selection_value)}), with "
            f"{row.optimizer}, lr {row.lr:g} and batch {row.batch_size}: test accuracy "
            f"{pct(best.test_accuracy)}, macro F1 {best.macro_f1:.4f}"
        )
        if best.transfer_gain is not None:
            text += f", {points(best.transfer_gain)} over its control"
        text += "."
        by_test = max(chosen, key=lambda r: r.test_accuracy)
        if by_test.job_id != best.job_id:
            text += (
                f" On test accuracy alone {by_test.variant} would rank first ({pct(by_test.test_accuracy)}); "
                "the choice is made on the validation split so that the test split stays unseen."
            )
        out.append(Paragraph(text))

    # ------------------------------------------------------------ 10. conclusion
    out.append(Heading(2, "Limitations and next steps (seed section 10)"))
    out.append(
        Bullets(_limitations(session, experiment, request, comparison, evaluations, test_images, jobs))
    )
    out.append(Heading(3, "Next steps"))
    out.append(Bullets(_next_steps(request, comparison)))
    return out


_AXIS_NAMES = {"lr": "Learning rate", "batch_size": "Batch size", "optimizer": "Optimiser"}


def _axis_value(axis: str, value: Any) -> str:
    return f"{value:g}" if axis == "lr" else str(value)


def _phase_images(session: Session, job_id: str) -> tuple[int, int] | None:
    from service.experiments.compare import _images, _last_epochs

    last = _last_epochs(session, [job_id])
    train = _images(last.get((job_id, "train")))
    if train is None:
        return None
    return train, _images(last.get((job_id, "val"))) or 0


def _most_confused(evaluation: Evaluation) -> tuple[str, str, int] | None:
    labels = [c["label"] for c in evaluation.per_class]
    matrix = evaluation.confusion_matrix
    best = None
    for i, row in enumerate(matrix):
        for j, n in enumerate(row):
            if i != j and n > 0 and (best is None or n > best[2]):
                best = (labels[i], labels[j], n)
    return best


def _test_images(evaluations: dict[str, Evaluation], chosen: list[ComparisonRow]) -> int | None:
    for r in chosen:
        return sum(c["support"] for c in evaluations[r.job_id].per_class)
    return None


def _limitations(
    session: Session,
    experiment: Experiment,
    request: ExperimentCreate,
    comparison: Comparison,
    evaluations: dict[str, Evaluation],
    test_images: int | None,
    jobs: list[Job],
) -> list[str]:
    items: list[str] = []
    pretrain = comparison.pretrain
    if pretrain is not None and pretrain.train_images is not None:
        seen = pretrain.train_images + (pretrain.val_images or 0)
        official = OFFICIAL_SIZES.get(pretrain.dataset, {}).get("train")
        share = f", {share_words(seen, official)}" if official else ""
        items.append(
            f"Pre-training saw {count(seen)} {dataset_name(pretrain.dataset)} training images{share}: "
            f"{count(pretrain.train_images)} to train and {count(pretrain.val_images)} to validate, "
            f"for {pretrain.epochs} epochs."
        )
        if pretrain.test_accuracy is not None and pretrain.test_images:
            text = (
                f"The pre-trained model's accuracy was measured on {count(pretrain.test_images)} "
                f"{dataset_name(pretrain.dataset)} test images"
            )
            official_test = OFFICIAL_SIZES.get(pretrain.dataset, {}).get("test")
            if official_test and pretrain.test_images < official_test:
                text += f" (of the official {count(official_test)})"
            text += (
                f": {pct(pretrain.test_accuracy)} \u00b1 "
                f"{100 * standard_error(pretrain.test_accuracy, pretrain.test_images):.1f} points (one "
                "standard error)"
            )
            if pretrain.test_accuracy < WEAK_SOURCE_ACCURACY:
                text += ", a weak source model: what transfers from it is a lower bound on what STL-10 offers"
            items.append(text + ".")
    if test_images:
        official_test = OFFICIAL_SIZES.get(experiment.dataset, {}).get("test")
        text = f"The fine-tunes were tested on {count(test_images)} {dataset_name(experiment.dataset)} images"
        if official_test and test_images < official_test:
            text += f" of the official {count(official_test)}"
        best = comparison.best
        if best is not None and best.test_accuracy is not None:
            text += (
                f"; at the best test accuracy, {pct(best.test_accuracy)}, one standard error is "
                f"{100 * standard_error(best.test_accuracy, test_images):.2f} points"
            )
        items.append(text + ".")
    if request.data.train_samples is not None:
        items.append(
            f"Fine-tuning used at most {count(request.data.train_samples)} "
            f"{dataset_name(experiment.dataset)} training images (train_samples)."
        )
    seeds = {j.spec["hyperparameters"]["seed"] for j in jobs}
    items.append(
        f"Each setting ran once (seed {', '.join(str(s) for s in sorted(seeds))}): differences smaller "
        "than the standard errors above may not repeat with another seed."
    )
    devices = sorted({j.device for j in jobs if j.device})
    if devices:
        precisions = sorted({j.precision for j in jobs if j.precision})
        text = f"Trained on {', '.join(devices)}" + (f" in {' and '.join(precisions)}" if precisions else "")
        if request.data.image_size != 96:
            text += (
                f" at {request.data.image_size}x{request.data.image_size} pixels (the seed asks for 96x96)"
            )
        items.append(text + ".")
    if comparison.selection_measure != VAL_MEASURE:
        items.append("The runs had no validation split, so hyperparameters were chosen on training accuracy.")
    failed = [j for j in jobs if j.status != JobStatus.succeeded and j.role != JobRole.pretrain]
    if failed:
        items.append(
            f"{len(failed)} of {len([j for j in jobs if j.role != JobRole.pretrain])} fine-tunes and "
            f"controls did not succeed ({', '.join(f'{j.id[:8]} {j.status}' for j in failed[:8])}"
            f"{', ...' if len(failed) > 8 else ''}) and are missing from the comparison."
        )
    return items


def _next_steps(request: ExperimentCreate, comparison: Comparison) -> list[str]:
    items: list[str] = []
    pretrain = comparison.pretrain
    if pretrain is not None and pretrain.train_images is not None:
        official = OFFICIAL_SIZES.get(pretrain.dataset, {}).get("train")
        seen = pretrain.train_images + (pretrain.val_images or 0)
        if official and seen < official:
            items.append(
                f"Pre-train on all {count(official)} {dataset_name(pretrain.dataset)} training images "
                f"(this run had {count(seen)}), and measure how the transfer gain grows with them."
            )
    for finding in comparison.hyperparameters:
        if finding.axis == "lr" and len(finding.values) > 1:
            values = [v.value for v in finding.values]
            if finding.best_value == max(values):
                items.append(
                    f"The best learning rate was the largest tried ({finding.best_value:g}): try larger."
                )
            elif finding.best_value == min(values):
                items.append(
                    f"The best learning rate was the smallest tried ({finding.best_value:g}): try smaller."
                )
    if not comparison.hyperparameters:
        items.append("Sweep the learning rate, batch size and optimiser (the seed's section 8).")
    if "lp_ft" not in request.strategies:
        items.append(
            "Add lp_ft (a linear probe, then full fine-tuning), which often beats both of its parts."
        )
    if request.data.image_size != 96 or (pretrain is not None and pretrain.architecture != "resnet18"):
        items.append(
            "Repeat at the seed's scale: resnet18 at 96x96 pixels (`transferlab experiment --preset seed`)."
        )
    items.append("Repeat the chosen settings with several seeds to put error bars on every gain.")
    return items


# ---------------------------------------------------------------- rendering


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += [f"{'#' * block.level} {block.text}", ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Bullets):
            lines += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(_md_cell(h) for h in block.header) + " |")
            lines.append("|" + "|".join("---" for _ in block.header) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            lines.append("")
        elif isinstance(block, Image):
            lines += [f"![{block.title}]({block.url})", ""]
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; }
th { background: #f3f3f3; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption { font-size: 0.85em; color: #555; }
"""


def to_html(blocks: list[Block], title: str, settings: Settings) -> str:
    esc = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{esc(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{esc(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{esc(h)}</th>" for h in block.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block.rows
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, Image):
            src = _data_uri(block, settings)
            if src is not None:
                parts.append(
                    f'<figure><img src="{src}" alt="{esc(block.title)}">'
                    f"<figcaption>{esc(block.title)}</figcaption></figure>"
                )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _data_uri(image: Image, settings: Settings) -> str | None:
    if image.artifact is None:
        return None
    try:
        data = artifact_file(settings, image.artifact).read_bytes()
    except (OSError, ValueError):
        return None
    return f"data:{image.artifact.media_type};base64,{base64.b64encode(data).decode()}"
