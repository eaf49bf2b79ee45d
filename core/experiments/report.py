"""The experiment report, in Markdown or self-contained HTML, following the seed's sections 6-10.

Every sentence with a number in it is made here from stored rows (the comparison, evaluations,
costs, epoch metrics, jobs); none is written by hand. The report is built once as a list of blocks
and rendered twice: Markdown links the plots by URL, HTML embeds them as data URIs. build_report
reads the rows once (_Facts) and calls one function per section, in the seed's order; the table of
every run is the one the CLI prints too (core.experiments.table).

    blocks = build_report(session, experiment)
    to_markdown(blocks)   /   to_html(blocks, title, settings)
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.artifacts import EXPERIMENT_ARTIFACTS, artifact_file
from core.experiments.compare import (
    VAL_MEASURE,
    base_variant,
    build_comparison,
    images_seen,
    images_tested,
    last_epochs,
    per_class,
)
from core.experiments.plan import IMAGENET_SUFFIX
from core.experiments.schemas import Comparison, ComparisonRow, ExperimentCreate, SummaryRow
from core.experiments.table import REPORT_STYLE, comparison_cells, count, mib, pct, points, seconds
from core.job_plots import draw_missing_job_plots
from core.models import Artifact, Evaluation, Experiment, Job, JobRole, JobStatus, utcnow
from core.settings import Settings, get_settings

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
# pct, points, seconds, count and mib are the comparison table's (core.experiments.table).


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


# ---------------------------------------------------------------- what the sections read


@dataclass(frozen=True)
class _Facts:
    """The experiment, its comparison and the stored rows behind it: read once, shared by the sections."""

    session: Session
    experiment: Experiment
    request: ExperimentCreate
    comparison: Comparison
    jobs: list[Job]  # the jobs made for the experiment (a reused pre-train is not one)
    evaluations: dict[str, Evaluation]  # by job id, fine-tunes and controls
    artifacts: dict[tuple[str | None, str], Artifact]  # by (job id, name): the jobs' plots
    experiment_artifacts: dict[str, Artifact]  # by name: the experiment's plots
    by_id: dict[str, ComparisonRow]
    chosen: list[ComparisonRow]  # each variant's chosen run, in plan order
    source: str  # the data sets as people write them: STL-10, MNIST
    target: str
    test_images: int | None  # images each fine-tune was tested on

    def experiment_image(self, name: str) -> Image | None:
        artifact = self.experiment_artifacts.get(name)
        if artifact is None:
            return None
        url = f"/experiments/{self.experiment.id}/artifacts/{name}"
        return Image(EXPERIMENT_ARTIFACTS[name], url, artifact)

    def job_image(self, job_id: str, name: str, title: str) -> Image | None:
        artifact = self.artifacts.get((job_id, name))
        if artifact is None:
            return None
        return Image(title, f"/jobs/{job_id}/artifacts/{name}", artifact)


def _gather(session: Session, experiment: Experiment) -> _Facts:
    """Read what the sections need, once: the comparison, evaluations, plots and jobs."""
    comparison = build_comparison(session, experiment)
    rows = comparison.rows
    ids = [r.job_id for r in rows]
    evaluations = {e.job_id: e for e in session.scalars(select(Evaluation).where(Evaluation.job_id.in_(ids)))}
    owners = [*ids, experiment.pretrain_job_id or ""]
    chosen = [r for r in rows if r.chosen]
    settings = get_settings()
    for job in session.scalars(select(Job).where(Job.id.in_([r.job_id for r in chosen]))):
        draw_missing_job_plots(session, settings, job)  # the plots section shows theirs: drawn on first look
    artifacts = {
        (a.job_id, a.name): a for a in session.scalars(select(Artifact).where(Artifact.job_id.in_(owners)))
    }
    experiment_artifacts = {
        a.name: a for a in session.scalars(select(Artifact).where(Artifact.experiment_id == experiment.id))
    }
    pretrain = comparison.pretrain
    return _Facts(
        session=session,
        experiment=experiment,
        request=ExperimentCreate.model_validate(experiment.request),
        comparison=comparison,
        jobs=list(session.scalars(select(Job).where(Job.experiment_id == experiment.id))),
        evaluations=evaluations,
        artifacts=artifacts,
        experiment_artifacts=experiment_artifacts,
        by_id={r.job_id: r for r in rows},
        chosen=chosen,
        source=dataset_name(pretrain.dataset if pretrain else "?"),
        target=dataset_name(experiment.dataset),
        test_images=next((images_tested(evaluations[r.job_id]) for r in chosen), None),
    )


def _hyperparameters_of(row: ComparisonRow) -> str:
    return f"{row.optimizer}, lr {row.lr:g}, batch {row.batch_size}"


# ---------------------------------------------------------------- the sections, in the seed's order


def build_report(session: Session, experiment: Experiment) -> list[Block]:
    """The report's blocks: the status and set-up, then the seed's sections 6 to 10."""
    facts = _gather(session, experiment)
    sections = (
        _status,
        _setup,
        _model_evaluation,
        _computational_efficiency,
        _hyperparameter_tuning,
        _transfer,
        _sources,
        _best_strategy,
        _conclusion,
    )
    return [block for section in sections for block in section(facts)]


def _status(f: _Facts) -> list[Block]:
    """Title and status: what was transferred, how the experiment ended, its jobs by state."""
    experiment = f.experiment
    states: dict[str, int] = {}
    for job in f.jobs:
        states[job.status] = states.get(job.status, 0) + 1
    tally = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    out: list[Block] = [
        Heading(1, f"{experiment.name}: transfer from {f.source} to {f.target}"),
        Paragraph(
            f"Experiment {experiment.id}, {experiment.status}: {len(f.jobs)} jobs ({tally}). "
            f"Generated {utcnow():%Y-%m-%d %H:%M} UTC from the stored results."
        ),
    ]
    if experiment.status != "succeeded":
        out.append(
            Paragraph(
                f"This report is partial: the experiment ended {experiment.status}"
                + (f" ({experiment.error})" if experiment.error else "")
                + ". Only jobs that succeeded contribute numbers."
            )
        )
    return out


def _setup(f: _Facts) -> list[Block]:
    """Set-up (seed sections 2-5): the data, the pre-training and the strategies fine-tuned."""
    items = [
        _pretrain_setup(f),
        _finetune_setup(f),
        f"Hyperparameters are chosen per strategy on {f.comparison.selection_measure}; test accuracy is "
        "reported for those.",
    ]
    return [Heading(2, "Set-up"), Bullets([item for item in items if item])]


def _pretrain_setup(f: _Facts) -> str:
    """What the fine-tunes started from; empty when there is no pre-train."""
    pretrain, job = f.comparison.pretrain, f.experiment.pretrain_job
    if pretrain is None or job is None:
        return ""
    hp = job.spec["hyperparameters"]
    reused = " (reused from an earlier job)" if job.experiment_id != f.experiment.id else ""
    line = (
        f"Pre-training{reused}: {pretrain.architecture} on {f.source} for {pretrain.epochs} epochs at "
        f"{pretrain.image_size}x{pretrain.image_size} pixels, {hp['optimizer']} at lr {hp['lr']:g}, "
        f"batch {hp['batch_size']}"
    )
    if pretrain.train_images is not None:
        line += (
            f"; {count(pretrain.train_images)} training and {count(pretrain.val_images)} validation images"
        )
    if pretrain.test_accuracy is not None:
        line += (
            f"; test accuracy {pct(pretrain.test_accuracy)} on {count(pretrain.test_images)} "
            f"{f.source} test images"
        )
    return line + "."


def _finetune_setup(f: _Facts) -> str:
    """The target data, the variants and how many fine-tunes and controls ran."""
    request, rows = f.request, f.comparison.rows
    sample = next((r for r in rows if r.status == JobStatus.succeeded), None)
    sizes = ""
    if sample is not None:
        train_rows = _phase_images(f.session, sample.job_id)
        if train_rows:
            sizes = f", {count(train_rows[0])} training and {count(train_rows[1])} validation images"
    finetunes = [r for r in rows if not r.control]
    strategies = ", ".join(dict.fromkeys(r.variant for r in finetunes)) or "none"
    controls = f" and {len(rows) - len(finetunes)} controls from random weights" if request.controls else ""
    linear = f" (linear probes {request.linear_epochs})" if request.linear_epochs is not None else ""
    if request.hyperparameters.early_stopping_patience is not None:
        linear += (
            f", at most: each stops after {request.hyperparameters.early_stopping_patience} epochs "
            "without a better validation accuracy"
        )
    return (
        f"Fine-tuning on {f.target} at {request.data.image_size}x{request.data.image_size} pixels for "
        f"{request.hyperparameters.epochs} epochs{linear}{sizes}; strategies: {strategies}; "
        f"{len(finetunes)} fine-tunes{controls}."
    )


def _model_evaluation(f: _Facts) -> list[Block]:
    """Seed section 6: accuracy and F1 per strategy, per-class scores, confusion matrices, examples."""
    out: list[Block] = [Heading(2, "Model evaluation (seed section 6)")]
    best = f.comparison.best
    if not f.chosen or best is None:
        return [*out, Paragraph("No fine-tune succeeded: there are no metrics to compare.")]
    best_row = f.by_id[best.job_id]
    best_eval = f.evaluations[best_row.job_id]
    out += [
        _chosen_metrics_table(f),
        Paragraph("Per-class F1 on the test split, for each strategy's chosen run:"),
        _per_class_f1_table(f),
        Paragraph(f"Precision, recall and F1 per class for the best strategy, {best_row.variant}:"),
        _per_class_table(best_eval),
        Paragraph(_weakest_class(best_eval)),
    ]
    images = [f.experiment_image("per_class_f1.png")]
    images += [
        f.job_image(r.job_id, "confusion_matrix.png", f"Confusion matrix: {r.variant}") for r in f.chosen
    ]
    images += [
        f.job_image(best_row.job_id, "correct.png", f"Correctly classified: {best_row.variant}"),
        f.job_image(best_row.job_id, "misclassified.png", f"Misclassified: {best_row.variant}"),
    ]
    return out + [image for image in images if image is not None]


def _chosen_metrics_table(f: _Facts) -> Table:
    return Table(
        ["strategy", "chosen hyperparameters", "val acc", "test acc", "macro F1", "weighted F1"],
        [
            [
                r.variant,
                _hyperparameters_of(r),
                pct(r.val_accuracy),
                pct(r.test_accuracy),
                f"{r.macro_f1:.4f}",
                f"{f.evaluations[r.job_id].weighted_f1:.4f}",
            ]
            for r in f.chosen
        ],
    )


def _per_class_table(evaluation: Evaluation) -> Table:
    return Table(
        ["class", "precision", "recall", "F1", "support"],
        [
            [c["label"], f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", str(c["support"])]
            for c in per_class(evaluation)
        ],
    )


def _per_class_f1_table(f: _Facts) -> Table:
    scores = {r.job_id: per_class(f.evaluations[r.job_id]) for r in f.chosen}
    labels = [c["label"] for c in scores[f.chosen[0].job_id]]
    return Table(
        ["class", *[r.variant for r in f.chosen]],
        [[label, *[f"{scores[r.job_id][i]['f1']:.3f}" for r in f.chosen]] for i, label in enumerate(labels)],
    )


def _weakest_class(evaluation: Evaluation) -> str:
    worst = min(per_class(evaluation), key=lambda c: c["f1"])
    sentence = f"Its weakest class is {worst['label']} (F1 {worst['f1']:.3f})"
    confused = _most_confused(evaluation)
    if confused:
        true, pred, n = confused
        sentence += f"; its most frequent confusion is {true} taken for {pred} ({n} test images)"
    return sentence + "."


@dataclass(frozen=True)
class _RunCost:
    """A chosen run's costs, each one measured (the worker stores them all when a job succeeds)."""

    job_id: str
    variant: str
    train_seconds: float
    trainable_parameters: int
    total_parameters: int
    parameter_updates: int
    peak_memory_bytes: int
    memory_device: str

    @staticmethod
    def of(r: ComparisonRow) -> _RunCost | None:
        if (
            r.train_seconds is None
            or r.trainable_parameters is None
            or r.total_parameters is None
            or r.parameter_updates is None
            or r.peak_memory_bytes is None
            or r.memory_device is None
        ):
            return None
        return _RunCost(
            r.job_id,
            r.variant,
            r.train_seconds,
            r.trainable_parameters,
            r.total_parameters,
            r.parameter_updates,
            r.peak_memory_bytes,
            r.memory_device,
        )


def _computational_efficiency(f: _Facts) -> list[Block]:
    """Seed section 7: training time, parameters trained and updated, and peak memory per strategy."""
    out: list[Block] = [Heading(2, "Computational efficiency (seed section 7)")]
    costs = [c for c in map(_RunCost.of, f.chosen) if c is not None]
    if not costs:
        return [*out, Paragraph("No fine-tune succeeded: there is no cost to compare.")]
    out.append(
        Table(
            ["strategy", "train time", "trainable params", "share trained", "param updates", "peak memory"],
            [
                [
                    c.variant,
                    seconds(c.train_seconds),
                    count(c.trainable_parameters),
                    f"{100 * c.trainable_parameters / c.total_parameters:.1f}%",
                    count(c.parameter_updates),
                    f"{mib(c.peak_memory_bytes)} ({c.memory_device})",
                ]
                for c in costs
            ],
        )
    )
    fast = min(costs, key=lambda c: c.train_seconds)
    slow = max(costs, key=lambda c: c.train_seconds)
    sentences = [
        f"{fast.variant} trained fastest ({seconds(fast.train_seconds)}) and {slow.variant} slowest "
        f"({seconds(slow.train_seconds)}, {slow.train_seconds / max(fast.train_seconds, 1e-9):.1f} times "
        "as long)."
    ]
    few = min(costs, key=lambda c: c.parameter_updates)
    many = max(costs, key=lambda c: c.parameter_updates)
    if many.parameter_updates and few.job_id != many.job_id:
        sentences.append(
            f"{few.variant} made {count(few.parameter_updates)} parameter updates, "
            f"{many.parameter_updates / max(few.parameter_updates, 1):,.0f} times fewer than "
            f"{many.variant} ({count(many.parameter_updates)})."
        )
    if {c.memory_device for c in costs} == {"cpu"}:
        sentences.append(
            "Peak memory is the worker process's peak resident set size on the CPU: it includes the "
            "data set and the libraries, so it varies less between strategies than the trained "
            "parameters do."
        )
    out.append(Paragraph(" ".join(sentences)))
    images = [f.experiment_image(name) for name in ("accuracy_vs_time.png", "accuracy_vs_parameters.png")]
    return out + [image for image in images if image is not None]


def _hyperparameter_tuning(f: _Facts) -> list[Block]:
    """Seed section 8: what each swept hyperparameter did, the choices, and every run in one table."""
    out: list[Block] = [Heading(2, "Hyperparameter tuning (seed section 8)")]
    findings = f.comparison.hyperparameters
    if findings:
        items = []
        for finding in findings:
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
        choices = "; ".join(f"{r.variant}: {_hyperparameters_of(r)}" for r in f.chosen)
        out.append(Paragraph(f"Chosen per strategy: {choices}."))
    else:
        hp = f.request.hyperparameters
        out.append(
            Paragraph(
                f"No sweep was requested: every fine-tune used {hp.optimizer.value} at lr {hp.lr:g} with "
                f"batch {hp.batch_size}."
            )
        )
    out.append(Paragraph("Every run (controls start from random weights; gains are in test accuracy):"))
    out.append(Table(*comparison_cells([r.model_dump() for r in f.comparison.rows], REPORT_STYLE)))
    return out


def with_interval(mean: float | None, ci95: float | None, n: int, fmt: Any = pct) -> str:
    """'93.25% ± 0.40 (mean of 3 runs, 95% interval)' (fmt pct), '+1.20 ± 0.40 points (...)' (fmt
    points), or the single value when there is no interval."""
    if mean is None or ci95 is None or n < 2:
        return fmt(mean)
    value = (
        f"{fmt(mean)} ± {100 * ci95:.2f}"
        if fmt is pct
        else f"{points(mean, unit=False)} ± {100 * ci95:.2f} points"
    )
    return f"{value} (mean of {n} runs, 95% interval)"


def _summary_of(f: _Facts, row: ComparisonRow) -> SummaryRow | None:
    return next((s for s in f.comparison.summary if row.job_id in s.job_ids), None)


def _repeated_transfer(f: _Facts) -> list[Block]:
    """Section 9 with repeats: the chosen settings' mean gains with their intervals, and where an
    interval contains 0 the plain statement that no transfer was measured."""
    groups = [s for s in f.comparison.summary if s.chosen and s.transfer_gain_mean is not None]
    controls = {}
    for s in f.comparison.summary:
        if s.role == "control":
            controls[(s.variant, s.optimizer, s.lr, s.batch_size)] = s
    items = []
    for g in groups:
        control = controls.get((base_variant(g.variant), g.optimizer, g.lr, g.batch_size))
        text = (
            f"{g.variant}: {with_interval(g.test_accuracy_mean, g.test_accuracy_ci95, g.n)} from the "
            f"pre-trained weights"
        )
        if control is not None:
            text += (
                f", {with_interval(control.test_accuracy_mean, control.test_accuracy_ci95, control.n)} "
                f"{control_name(g.variant)}"
            )
        gain = with_interval(g.transfer_gain_mean, g.transfer_gain_ci95, g.n, points)
        if g.transfer_measured is False:
            text += f"; gain {gain}: the interval contains 0, so no transfer was measured."
        elif g.transfer_measured:
            verdict = "helped" if (g.transfer_gain_mean or 0) > 0 else "hurt"
            text += f"; gain {gain}: pre-training {verdict}, beyond the seeds' spread."
        else:
            text += f"; gain {gain}."
        items.append(text)
    return [
        Paragraph(
            "Each gain is paired: a fine-tune minus its control at the same seed, averaged over the "
            "seeds, with the half-width of its 95% t-interval."
        ),
        Bullets(items),
        _summary_table(f),
    ]


def _summary_table(f: _Facts) -> Table:
    return Table(
        [
            "variant",
            "role",
            "hyperparameters",
            "n",
            "test acc",
            "± 95%",
            "macro F1",
            "train s",
            "gain",
            "± 95%",
            "epochs run",
        ],  # fmt: skip
        [
            [
                s.variant + (" (chosen)" if s.chosen else ""),
                s.role,
                f"{s.optimizer}, lr {s.lr:g}, batch {s.batch_size}",
                str(s.n),
                pct(s.test_accuracy_mean),
                "" if s.test_accuracy_ci95 is None else f"{100 * s.test_accuracy_ci95:.2f}",
                "" if s.macro_f1_mean is None else f"{s.macro_f1_mean:.4f}",
                seconds(s.train_seconds_mean, unit=False),
                points(s.transfer_gain_mean, missing="", unit=False),
                "" if s.transfer_gain_ci95 is None else f"{100 * s.transfer_gain_ci95:.2f}",
                "" if s.epochs_run_mean is None else f"{s.epochs_run_mean:.3g}",
            ]
            for s in f.comparison.summary
        ],
    )


def _transfer(f: _Facts) -> list[Block]:
    """Seed section 9: how much of the source transfers: each gain against its control, each
    strategy against the baselines, then where the knowledge lives (layer probes, transferability)."""
    # Imported here: report_probes builds its sentences from this module's blocks.
    from core.experiments.report_probes import layer_probe_blocks, transferability_blocks

    return _transfer_gains(f) + _against_baselines(f) + layer_probe_blocks(f) + transferability_blocks(f)


def control_name(variant: str) -> str:
    """A control as the report names it: full's is a model trained from scratch."""
    return "from scratch" if variant == "full" else "from random weights"


def _against_baselines(f: _Facts) -> list[Block]:
    if not f.comparison.baselines:
        return []
    floors = {s.variant: s for s in f.comparison.summary if s.role == "baseline" and s.chosen}
    items = []
    for b in f.comparison.baselines:
        floor = floors.get(b.baseline)
        difference = with_interval(b.difference_mean, b.difference_ci95, b.n, points)
        text = f"{b.variant} against the {b.baseline} baseline"
        if floor is not None:
            text += f" ({with_interval(floor.test_accuracy_mean, floor.test_accuracy_ci95, floor.n)})"
        if b.beats is True:
            text += f": {difference}, above it beyond the seeds' spread."
        elif b.beats is False:
            text += f": {difference}; the interval does not lie above 0, so {b.variant} does not beat it."
        else:
            text += f": {difference} (one seed: no interval, so no verdict)."
        items.append(text)
    out: list[Block] = [
        Heading(3, "Against the baselines"),
        Paragraph(
            "The pixels baseline is a linear classifier on the normalised input pixels (pixel_linear, "
            "trained from scratch with the same hyperparameters, sweep and seeds): features that do not "
            "beat it have not transferred anything a linear model could use. Differences are paired by "
            "seed."
        ),
        Bullets(items),
    ]
    linear = next(
        (b for b in f.comparison.baselines if (b.variant, b.baseline) == ("linear", "pixels")), None
    )
    if linear is not None and linear.beats is False:
        pretrain = f.comparison.pretrain
        images = (
            f" ({count(pretrain.train_images)} training images)" if pretrain and pretrain.train_images else ""
        )
        out.append(
            Paragraph(
                f"The linear probe does not beat raw pixels: the features learnt from {f.source}{images} "
                f"do not beat the pixels of {f.target} for a linear classifier."
            )
        )
    return out


def _transfer_gains(f: _Facts) -> list[Block]:
    out: list[Block] = [Heading(2, f"How much of {f.source} transfers (seed section 9)")]
    if not f.request.controls:
        return [*out, Paragraph("No controls were requested, so the transfer cannot be measured.")]
    if f.request.repeats > 1:
        return [*out, *_repeated_transfer(f)]
    gains = [
        (r, r.transfer_gain, f.by_id[r.control_job_id])
        for r in f.chosen
        if r.transfer_gain is not None and r.control_job_id is not None
    ]
    if not gains:
        return [*out, Paragraph("No fine-tune has a succeeded control to compare with.")]
    out.append(
        Bullets(
            [
                f"{r.variant}: {pct(r.test_accuracy)} from the pre-trained weights, "
                f"{pct(control.test_accuracy)} {control_name(r.variant)}: {points(gain)}."
                for r, gain, control in gains
            ]
        )
    )
    top, _, _ = max(gains, key=lambda g: g[1])
    low, _, _ = min(gains, key=lambda g: g[1])
    text = f"Pre-training helped {top.variant} most ({points(top.transfer_gain)})"
    if low.job_id != top.job_id:
        text += f" and {low.variant} least ({points(low.transfer_gain)})"
    text += "."
    noise = _noise(f)
    if noise is not None:
        within = [r.variant for r, gain, _ in gains if abs(gain) < noise]
        text += (
            f" With {count(f.test_images)} test images a difference of two accuracies below about "
            f"{100 * noise:.2f} points is within two standard errors"
        )
        text += f", which holds for {', '.join(within)}." if within else "; every gain here is larger."
    out.append(Paragraph(text))
    return out


def _sources(f: _Facts) -> list[Block]:
    """With imagenet: per strategy variant, the chosen run from the experiment's pre-train, from
    ImageNet's weights and from random weights (the control they share), side by side."""
    if not f.request.imagenet:
        return []
    out: list[Block] = [Heading(2, f"Pre-trained on {f.source}, ImageNet weights, or random weights")]
    by_variant = {r.variant: r for r in f.chosen}
    items = []
    for variant, ours in by_variant.items():
        if ours.source != "pretrained":
            continue
        imagenet = by_variant.get(variant + IMAGENET_SUFFIX)
        control = f.by_id.get(ours.control_job_id) if ours.control_job_id else None
        text = f"{variant}: {pct(ours.test_accuracy)} pre-trained on {f.source}"
        text += (
            f", {pct(imagenet.test_accuracy)} from ImageNet weights" if imagenet else ", ImageNet run missing"
        )
        if control is not None:
            text += f", {pct(control.test_accuracy)} {control_name(variant)}"
        items.append(text + ".")
    if not items:
        return [*out, Paragraph("No fine-tune has finished yet.")]
    out.append(Bullets(items))
    out.append(
        Paragraph(
            "Each row is the variant's chosen hyperparameters; the ImageNet runs use the same strategy, "
            "grid and seeds as those from the pre-train, and are paired with the same controls."
        )
    )
    return out


def _noise(f: _Facts) -> float | None:
    """Two standard errors of a difference of two accuracies near the chosen runs' mean, or None."""
    accuracies = [r.test_accuracy for r in f.chosen if r.test_accuracy is not None]
    if not accuracies or not f.test_images:
        return None
    return 2 * math.sqrt(2) * standard_error(sum(accuracies) / len(accuracies), f.test_images)


def _best_strategy(f: _Facts) -> list[Block]:
    """Seed section 9: the best strategy, chosen on the selection measure, with its test accuracy."""
    out: list[Block] = [Heading(2, "Best strategy")]
    best = f.comparison.best
    if best is None:
        return [*out, Paragraph("None: no fine-tune succeeded.")]
    row = f.by_id[best.job_id]
    text = (
        f"By {best.measure}, the best strategy is {best.variant} ({pct(best.selection_value)}), with "
        f"{row.optimizer}, lr {row.lr:g} and batch {row.batch_size}: test accuracy "
        f"{with_interval(best.test_accuracy, best.test_accuracy_ci95, best.n)}, macro F1 "
        f"{best.macro_f1:.4f}"
    )
    if best.transfer_gain is not None:
        gain = with_interval(best.transfer_gain, best.transfer_gain_ci95, best.n, points)
        text += f", {gain} over its control"
        group = _summary_of(f, row)
        if group is not None and group.transfer_measured is False:
            text += " (an interval that contains 0: no transfer was measured)"
    text += "."
    by_test = max(f.chosen, key=lambda r: -math.inf if r.test_accuracy is None else r.test_accuracy)
    if by_test.job_id != best.job_id:
        text += (
            f" On test accuracy alone {by_test.variant} would rank first ({pct(by_test.test_accuracy)}); "
            "the choice is made on the validation split so that the test split stays unseen."
        )
    out.append(Paragraph(text))
    return out


def _conclusion(f: _Facts) -> list[Block]:
    """Seed section 10: the limitations of these numbers, and what to run next."""
    return [
        Heading(2, "Limitations and next steps (seed section 10)"),
        Bullets(_sample_limitations(f) + _procedure_limitations(f)),
        Heading(3, "Next steps"),
        Bullets(_next_steps(f)),
    ]


_AXIS_NAMES = {"lr": "Learning rate", "batch_size": "Batch size", "optimizer": "Optimiser"}


def _axis_value(axis: str, value: Any) -> str:
    return f"{value:g}" if axis == "lr" else str(value)


def _phase_images(session: Session, job_id: str) -> tuple[int, int] | None:
    last = last_epochs(session, [job_id])
    train = images_seen(last.get((job_id, "train")))
    if train is None:
        return None
    return train, images_seen(last.get((job_id, "val"))) or 0


def _most_confused(evaluation: Evaluation) -> tuple[str, str, int] | None:
    labels = [c["label"] for c in per_class(evaluation)]
    matrix = cast(list[list[int]], evaluation.confusion_matrix)  # a JSON list of lists, rows = true class
    best: tuple[str, str, int] | None = None
    for i, row in enumerate(matrix):
        for j, n in enumerate(row):
            if i != j and n > 0 and (best is None or n > best[2]):
                best = (labels[i], labels[j], n)
    return best


def _sample_limitations(f: _Facts) -> list[str]:
    """How many images the numbers rest on: the pre-training's, and the fine-tunes' tests."""
    items: list[str] = []
    pretrain = f.comparison.pretrain
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
    experiment, test_images = f.experiment, f.test_images
    if test_images:
        official_test = OFFICIAL_SIZES.get(experiment.dataset, {}).get("test")
        text = f"The fine-tunes were tested on {count(test_images)} {dataset_name(experiment.dataset)} images"
        if official_test and test_images < official_test:
            text += f" of the official {count(official_test)}"
        best = f.comparison.best
        if best is not None and best.test_accuracy is not None:
            text += (
                f"; at the best test accuracy, {pct(best.test_accuracy)}, one standard error is "
                f"{100 * standard_error(best.test_accuracy, test_images):.2f} points"
            )
        items.append(text + ".")
    if f.request.data.train_samples is not None:
        items.append(
            f"Fine-tuning used at most {count(f.request.data.train_samples)} "
            f"{dataset_name(experiment.dataset)} training images (train_samples)."
        )
    return items


def _procedure_limitations(f: _Facts) -> list[str]:
    """How the runs were made: one seed, the hardware, the selection split, the jobs that failed."""
    jobs, request = f.jobs, f.request
    items: list[str] = []
    seeds = {j.spec["hyperparameters"]["seed"] for j in jobs}
    if request.repeats == 1:
        items.append(
            f"Each setting ran once (seed {', '.join(str(s) for s in sorted(seeds))}): differences "
            "smaller than the standard errors above may not repeat with another seed."
        )
    else:
        items.append(
            f"Each setting ran {request.repeats} times (seeds {min(seeds)}..{max(seeds)}); the intervals "
            "are over those seeds (data order, split, augmentation, the head's initialisation) and "
            "not over the pre-train, which ran once."
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
    if f.comparison.selection_measure != VAL_MEASURE:
        items.append("The runs had no validation split, so hyperparameters were chosen on training accuracy.")
    failed = [j for j in jobs if j.status != JobStatus.succeeded and j.role != JobRole.pretrain]
    if failed:
        items.append(
            f"{len(failed)} of {len([j for j in jobs if j.role != JobRole.pretrain])} fine-tunes and "
            f"controls did not succeed ({', '.join(f'{j.id[:8]} {j.status}' for j in failed[:8])}"
            f"{', ...' if len(failed) > 8 else ''}) and are missing from the comparison."
        )
    return items


def _next_steps(f: _Facts) -> list[str]:
    """What would make the numbers firmer or the study wider."""
    request, comparison = f.request, f.comparison
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
    if f.request.repeats == 1:
        items.append("Repeat with several seeds (`repeats`) to put intervals on every gain.")
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
