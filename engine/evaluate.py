"""Test-set metrics: accuracy, per-class precision/recall/F1/support, confusion matrix.

Computed from the confusion matrix in torch, not with scikit-learn: importing scikit-learn and its
first call cost 1.76 s of a cold process (measured: `evaluate_predictions` on 1,000 rows, first call
1.755 s, second 0.007 s), 22% of the smallest benchmark job's whole process, and the arithmetic is
four lines. tests/engine/test_evaluate.py checks every number against scikit-learn's
precision_recall_fscore_support, f1_score and confusion_matrix (with zero_division=0: a class never
predicted, or never present, scores 0, as scikit-learn does)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from engine.results import ClassMetrics, Evaluation


def confusion(true: torch.Tensor, predicted: torch.Tensor, classes: int) -> torch.Tensor:
    """classes x classes counts, row = true class, column = predicted class (scikit-learn's layout)."""
    flat = true.long() * classes + predicted.long()
    return torch.bincount(flat, minlength=classes * classes).reshape(classes, classes)


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1e-12), torch.zeros_like(numerator))


def evaluate_predictions(
    logits: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    sample_indices: torch.Tensor,
) -> Evaluation:
    probabilities = torch.softmax(logits.float(), dim=1)
    predicted = probabilities.argmax(dim=1)
    true = labels.cpu().long()
    matrix = confusion(true, predicted.cpu(), len(class_names))
    counts = matrix.double()
    hits = counts.diagonal()
    support = counts.sum(dim=1)
    precision = _ratio(hits, counts.sum(dim=0))
    recall = _ratio(hits, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    total = float(support.sum())
    per_class = [
        ClassMetrics(name, float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
        for i, name in enumerate(class_names)
    ]
    return Evaluation(
        accuracy=float(hits.sum()) / total if total else 0.0,
        macro_f1=float(f1.mean()) if len(class_names) else 0.0,
        weighted_f1=float((f1 * support).sum()) / total if total else 0.0,
        per_class=per_class,
        confusion_matrix=matrix.tolist(),
        sample_indices=sample_indices.cpu(),
        true_labels=labels.cpu(),
        predicted_labels=predicted.cpu(),
        probabilities=probabilities.cpu(),
    )
