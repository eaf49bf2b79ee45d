"""An experiment's comparison plots: test accuracy against training time and against trainable
parameters, and per-class F1 of each variant's chosen run and its control."""

from __future__ import annotations

from sqlalchemy.orm import Session

from core.artifacts import EXPERIMENT_ARTIFACTS, save_artifact
from core.experiments.compare import build_comparison
from core.experiments.probes import partial_depths, transferability_points
from core.experiments.schemas import Comparison
from core.models import Artifact, Evaluation, Experiment
from core.settings import Settings, get_settings


def render_experiment_plots(session: Session, experiment: Experiment) -> list[tuple[str, bytes]]:
    """(name, PNG) for accuracy against time and against trainable parameters (every succeeded run;
    controls hollow; the chosen runs named) and per-class F1 of each variant's chosen run and its
    control. Reads rows only; writes nothing."""
    from engine.plots import per_class_f1_png, scatter_png  # matplotlib: only when drawing

    comparison = build_comparison(session, experiment)
    done = [r for r in comparison.rows if r.test_accuracy is not None and r.train_seconds is not None]
    if not done:
        return _depth_plots(comparison, experiment)
    chosen = {r.job_id for r in comparison.rows if r.chosen}
    chosen |= {r.control_job_id for r in comparison.rows if r.chosen and r.control_job_id}

    def name(row) -> str:
        if row.job_id not in chosen:
            return ""
        return f"{row.variant} control" if row.control else row.variant

    points = [
        {
            "name": name(r),
            "accuracy": r.test_accuracy,
            "train_seconds": r.train_seconds,
            "trainable_parameters": r.trainable_parameters,
            "control": r.control,
        }
        for r in done
    ]
    title = f"{experiment.name}: fine-tuned on {experiment.dataset}"
    plots = [
        ("accuracy_vs_time.png", scatter_png(points, "train_seconds", "training time (s)", title)),
        (
            "accuracy_vs_parameters.png",
            scatter_png(points, "trainable_parameters", "trainable parameters", title, log_x=True),
        ),
    ]
    bars, class_names = [], []
    for row in comparison.rows:
        if row.job_id in chosen and row.test_accuracy is not None:
            stored = session.get(Evaluation, row.job_id)
            if stored is None:  # a succeeded run always has one; a row deleted since is left out
                continue
            class_names = [c["label"] for c in stored.per_class]
            bars.append({"name": name(row), "f1": [c["f1"] for c in stored.per_class]})
    if bars:
        plots.append(("per_class_f1.png", per_class_f1_png(bars, class_names, f"Per-class F1: {title}")))
    return plots + _depth_plots(comparison, experiment)


def _depth_plots(comparison: Comparison, experiment: Experiment) -> list[tuple[str, bytes]]:
    """layer_probes.png when the experiment probed its blocks; transferability.png when it ran
    partial at two or more depths."""
    from engine.plots import layer_probes_png, transferability_png  # matplotlib: only when drawing
    from engine.strategies import block_count

    plots = []
    probes = [r for r in comparison.layer_probes if r.accuracy_transferred is not None]
    if probes:
        rows = [
            {
                "block_name": r.block_name,
                "transferred": r.accuracy_transferred,
                "transferred_ci95": r.accuracy_transferred_ci95,
                "random": r.accuracy_random,
                "random_ci95": r.accuracy_random_ci95,
            }
            for r in probes
        ]
        title = f"{experiment.name}: layer probes on {experiment.dataset}"
        plots.append(("layer_probes.png", layer_probes_png(rows, title)))
    if len(partial_depths(comparison)) >= 2:
        blocks = block_count(experiment.architecture)
        points = [vars(p) for p in transferability_points(comparison, blocks)]
        title = f"{experiment.name}: transferability on {experiment.dataset}"
        plots.append(("transferability.png", transferability_png(points, blocks, title)))
    return plots


def save_experiment_plots(
    session: Session,
    experiment_id: str,
    plots: list[tuple[str, bytes]],
    *,
    settings: Settings | None = None,
) -> list[Artifact]:
    """Store rendered plots as the experiment's artifacts. Flushes; the caller commits."""
    settings = settings or get_settings()
    return [
        save_artifact(
            session,
            settings,
            name=name,
            title=EXPERIMENT_ARTIFACTS[name],
            data=data,
            experiment_id=experiment_id,
        )
        for name, data in plots
    ]


def write_experiment_artifacts(
    session: Session, experiment: Experiment, *, settings: Settings | None = None
) -> list[Artifact]:
    """render_experiment_plots, then save_experiment_plots. Flushes; the caller commits."""
    return save_experiment_plots(
        session, experiment.id, render_experiment_plots(session, experiment), settings=settings
    )
