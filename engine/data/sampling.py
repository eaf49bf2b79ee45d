"""Seeded, stratified index sets: a class-balanced subset, and a train / validation split.

keep = stratified_subset(labels, 5000, seed=0)        # sorted indices, class-balanced
fit, val = train_val_split(labels[keep], 0.1, seed=0)  # positions within keep
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from engine.errors import SpecError


def _allocate(counts: torch.Tensor, total: int, cap: torch.Tensor) -> torch.Tensor:
    # Largest-remainder shares of `total` in proportion to `counts`, never above `cap` a class.
    exact = counts.double() * total / counts.sum()
    take = torch.minimum(exact.floor().long(), cap)
    order = torch.argsort(exact - exact.floor(), descending=True, stable=True).tolist()
    while int(take.sum()) < total and bool((take < cap).any()):
        for c in order:  # at most num_classes steps a pass
            if int(take.sum()) >= total:
                break
            if take[c] < cap[c]:
                take[c] += 1
    return take


def _pick(
    labels: torch.Tensor, take_of: Callable[[torch.Tensor], torch.Tensor], seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    # Shuffle each class with one seeded generator; its first `take` go in, the rest stay out.
    labels = labels.detach().cpu().long()
    classes, counts = torch.unique(labels, return_counts=True)
    take = take_of(counts)
    g = torch.Generator().manual_seed(seed)
    chosen, rest = [], []
    for c, k in zip(classes.tolist(), take.tolist(), strict=True):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=g)]
        chosen.append(members[:k])
        rest.append(members[k:])
    return torch.cat(chosen).sort().values, torch.cat(rest).sort().values


def stratified_subset(labels: torch.Tensor, n: int | None, seed: int) -> torch.Tensor:
    """Sorted indices of n samples, each class in its original proportion (and at least one of
    each class when n allows). n None or >= len(labels) -> all indices."""
    total = len(labels)
    if n is None or n >= total:
        return torch.arange(total)
    if n < 0:
        raise SpecError("n", f"a subset size must be >= 0, got {n}")

    def take_of(counts: torch.Tensor) -> torch.Tensor:
        take = _allocate(counts, n, counts)
        while n >= len(counts) and bool((take == 0).any()):  # a skewed set keeps every class
            take[int(torch.argmax(take))] -= 1
            take[int(torch.nonzero(take == 0)[0])] += 1
        return take

    return _pick(labels, take_of, seed)[0]


def train_val_split(
    labels: torch.Tensor, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices): disjoint, sorted, stratified by class; every class
    keeps at least one training sample. val_fraction 0 -> (all, empty)."""
    if not 0 <= val_fraction < 1:
        raise SpecError("val_fraction", f"must be in [0, 1), got {val_fraction}")
    total = len(labels)
    if val_fraction == 0 or total == 0:
        return torch.arange(total), torch.empty(0, dtype=torch.long)
    val, train = _pick(
        labels, lambda counts: _allocate(counts, round(val_fraction * total), counts - 1), seed
    )
    return train, val
