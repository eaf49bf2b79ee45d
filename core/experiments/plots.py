"""An experiment's comparison plots: test accuracy against training time and against trainable
parameters, and per-class F1 of each variant's chosen run and its control."""

from __future__ import annotations

from sqlalchemy.orm import Session

from core.artifacts import EXPERIMENT_ARTIFACTS, save_artifact
from core.experiments.compare import build_comparison
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
        return []
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
