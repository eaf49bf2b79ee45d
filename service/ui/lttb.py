"""Largest-Triangle-Three-Buckets (Steinarsson 2013): n points down to `threshold` that keep a
curve's shape (peaks and dips survive, unlike taking every k-th point). The dashboard draws at most
MAX_POINTS per curve; static/app.js has the same function for points that arrive live.

    keep = lttb_indices(xs, ys, 2000)      # indices into xs/ys, first and last always kept
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_POINTS = 2000


def lttb_indices(xs: Sequence[float], ys: Sequence[float], threshold: int = MAX_POINTS) -> list[int]:
    """Indices of the points to keep, ascending. All of them when there are no more than threshold."""
    n = len(xs)
    if threshold >= n or threshold < 3:
        return list(range(n))
    keep = [0]
    bucket = (n - 2) / (threshold - 2)
    a = 0
    for i in range(threshold - 2):
        # The next bucket's average is the third corner of the triangle.
        next_start, next_end = int((i + 1) * bucket) + 1, min(int((i + 2) * bucket) + 1, n)
        avg_x = sum(xs[next_start:next_end]) / (next_end - next_start)
        avg_y = sum(ys[next_start:next_end]) / (next_end - next_start)
        start, end = int(i * bucket) + 1, int((i + 1) * bucket) + 1
        ax, ay = xs[a], ys[a]
        best, best_area = start, -1.0
        for j in range(start, end):
            area = abs((ax - avg_x) * (ys[j] - ay) - (ax - xs[j]) * (avg_y - ay))
            if area > best_area:
                best, best_area = j, area
        keep.append(best)
        a = best
    keep.append(n - 1)
    return keep
