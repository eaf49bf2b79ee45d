"""The test-set metrics equal scikit-learn's, including classes never predicted or never present."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from engine.evaluate import evaluate_predictions


def logits_for(predicted: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(predicted, classes).float() * 4 + torch.rand(len(predicted), classes)


def predictions(case: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(true, predicted, classes): 60% right, the rest random, then the case's twist."""
    if case == "two classes":
        return torch.tensor([0, 1, 1, 0, 1]), torch.tensor([0, 1, 0, 0, 1]), 2
    gen = torch.Generator().manual_seed(7)
    true = torch.randint(0, 10, (400,), generator=gen)
    noise = torch.randint(0, 10, (400,), generator=gen)
    predicted = torch.where(torch.rand(400, generator=gen) < 0.6, true, noise)
    if case == "class 3 never predicted":
        predicted[predicted == 3] = 4
    if case == "class 9 never present":
        true[true == 9] = 8
    return true, predicted, 10


@pytest.mark.parametrize(
    "case", ["random", "class 3 never predicted", "class 9 never present", "two classes"]
)
def test_every_metric_equals_scikit_learns(case):
    true, predicted, classes = predictions(case)
    labels = list(range(classes))

    got = evaluate_predictions(
        logits_for(predicted, classes), true, [str(c) for c in labels], torch.arange(len(true))
    )

    y, p = true.numpy(), predicted.numpy()
    precision, recall, f1, support = precision_recall_fscore_support(y, p, labels=labels, zero_division=0)
    assert got.accuracy == pytest.approx(accuracy_score(y, p))
    assert got.macro_f1 == pytest.approx(f1_score(y, p, labels=labels, average="macro", zero_division=0))
    assert got.weighted_f1 == pytest.approx(
        f1_score(y, p, labels=labels, average="weighted", zero_division=0)
    )
    assert got.confusion_matrix == confusion_matrix(y, p, labels=labels).tolist()
    for i, row in enumerate(got.per_class):
        assert (row.precision, row.recall, row.f1) == pytest.approx((precision[i], recall[i], f1[i]))
        assert row.support == support[i]
    assert got.predicted_labels.tolist() == p.tolist()


def test_an_empty_test_split_scores_zero_instead_of_dividing_by_zero():
    got = evaluate_predictions(
        torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), ["a", "b", "c"], torch.arange(0)
    )

    assert (got.accuracy, got.macro_f1, got.weighted_f1) == (0.0, 0.0, 0.0)
    assert got.confusion_matrix == [[0, 0, 0]] * 3
