"""Means with 95% intervals over repeated runs (different seeds), for the experiment's summary.

The interval is Student's t: mean +/- t(0.975, n-1) * s / sqrt(n), with s the sample standard
deviation; it is the usual choice for a handful of seeds (n = 2..10), where a normal interval would be
too narrow. A transfer gain is paired: each fine-tune minus its control on the same seed, so the seed's
shared luck (data order, the split) cancels, and the interval is that of the mean difference.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class MeanInterval:
    n: int
    mean: float | None  # None when there is no value
    ci95: float | None  # half-width of the 95% t-interval; None for fewer than two values

    def contains_zero(self) -> bool:
        """Whether 0 is inside the interval (a single value: when it is 0 itself)."""
        if self.mean is None:
            return True
        if self.ci95 is None:
            return self.mean == 0
        return self.mean - self.ci95 <= 0 <= self.mean + self.ci95


def mean_ci95(values: Sequence[float]) -> MeanInterval:
    """The mean of `values` and the half-width of its 95% t-interval."""
    n = len(values)
    if n == 0:
        return MeanInterval(0, None, None)
    mean = statistics.fmean(values)
    if n == 1:
        return MeanInterval(1, mean, None)
    from scipy.stats import t  # a fraction of a second to import: only when there are repeats

    half = float(t.ppf(0.975, n - 1)) * statistics.stdev(values) / math.sqrt(n)
    return MeanInterval(n, mean, half)
