"""Test-set metrics with scikit-learn: accuracy, per-class precision/recall/F1/support, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from engine.results import ClassMetrics, Evaluation


def evaluate_predictions(
    logits: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    sample_indices: torch.Tensor,
) -> Evaluation:
    # scikit-learn (about 0.5 s to import) only once a job evaluates, not at every worker's start.
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    probabilities = torch.softmax(logits.float(), dim=1)
    predicted = probabilities.argmax(dim=1)
    y_true, y_pred = labels.cpu().numpy(), predicted.cpu().numpy()
    classes = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0
    )
    per_class = [
        ClassMetrics(class_names[i], float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
        for i in classes
    ]
    return Evaluation(
        accuracy=float(accuracy_score(y_true, y_pred)),
        macro_f1=float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        weighted_f1=float(f1_score(y_true, y_pred, labels=classes, average="weighted", zero_division=0)),
        per_class=per_class,
        confusion_matrix=confusion_matrix(y_true, y_pred, labels=classes).tolist(),
        sample_indices=sample_indices.cpu(),
        true_labels=labels.cpu(),
        predicted_labels=predicted.cpu(),
        probabilities=probabilities.cpu(),
    )
