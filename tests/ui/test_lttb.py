"""Curves over MAX_POINTS are downsampled with LTTB: the ends and the extremes survive."""

from __future__ import annotations

import math

from service.schemas import EpochMetricPublic
from service.ui.lttb import MAX_POINTS, lttb_indices
from service.ui.views import curves


def test_short_series_are_kept_whole():
    assert lttb_indices([0, 1, 2], [5, 6, 7], threshold=10) == [0, 1, 2]


def test_a_long_series_keeps_threshold_points_in_order_with_both_ends():
    xs = list(range(10_000))
    ys = [math.sin(x / 50) for x in xs]
    keep = lttb_indices(xs, ys, threshold=500)
    assert len(keep) == 500 and keep[0] == 0 and keep[-1] == 9_999 and keep == sorted(set(keep))


def test_a_spike_survives_where_every_kth_point_would_lose_it():
    ys = [0.0] * 5_000
    ys[2_503] = 10.0
    keep = lttb_indices(list(range(5_000)), ys, threshold=100)
    assert 2_503 in keep and 2_503 % (5_000 // 100) != 0


def test_job_curves_past_the_limit_are_downsampled_alike_for_every_column():
    rows = [
        EpochMetricPublic(
            epoch=e,
            phase=phase,
            loss=1 / e,
            accuracy=1 - 1 / e,
            lr=1e-3,
            seconds=1.0,
            images_per_second=100.0,
        )  # fmt: skip
        for e in range(1, 3_001)
        for phase in ("train", "val")
    ]
    data = curves(rows)
    assert len(data["epoch"]) == MAX_POINTS and data["epoch"][0] == 1 and data["epoch"][-1] == 3_000
    assert all(len(column) == MAX_POINTS for column in data.values())
    assert data["val_loss"] == [1 / e for e in data["epoch"]]


def test_job_curves_under_the_limit_are_every_epoch_with_gaps_where_a_phase_is_missing():
    rows = [EpochMetricPublic(epoch=e, phase="train", loss=1.0, accuracy=0.5, lr=1e-3, seconds=1.0,
                              images_per_second=9.0) for e in (1, 2, 3)]  # fmt: skip
    rows.append(EpochMetricPublic(epoch=2, phase="val", loss=2.0, accuracy=0.4, lr=1e-3, seconds=1.0,
                                  images_per_second=9.0))  # fmt: skip
    data = curves(rows)
    assert data["epoch"] == [1, 2, 3] and data["val_loss"] == [None, 2.0, None]
