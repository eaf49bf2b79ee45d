"""PNG plots of a job and of a comparison, drawn with matplotlib's object API (no pyplot: headless and
safe in worker threads). Each function returns PNG bytes; the caller decides where they live."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

DPI = 110


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _short(names: Sequence[str]) -> list[str]:
    # torchvision's MNIST names are "0 - zero": the digit alone reads better on an axis.
    return [n.split(" - ")[0] if " - " in n else n for n in names]


def confusion_matrix_png(matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str) -> bytes:
    m = np.asarray(matrix)
    n = len(class_names)
    fig = Figure(figsize=(1.0 + 0.5 * n, 0.8 + 0.5 * n))
    ax = fig.add_subplot()
    ax.imshow(m, cmap="Blues")
    labels = _short(class_names)
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = m.max() / 2 if m.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if m[i, j] > threshold else "black")  # fmt: skip
    return _png(fig)


def examples_png(
    images: np.ndarray,
    true_labels: Sequence[int],
    predicted: Sequence[int],
    probabilities: Sequence[float],
    class_names: Sequence[str],
    title: str,
    columns: int = 8,
) -> bytes:
    """A grid of test images (uint8, N x C x H x W) captioned 'true -> predicted (p)'.

    One mosaic in one axes, not a subplot per image: 0.6 s -> about 0.15 s for 32 images, which is
    paid by every job the worker finishes."""
    names = _short(class_names)
    count = len(images)
    rows = max(1, -(-count // columns))
    if count == 0:
        fig = Figure(figsize=(4, 1))
        fig.text(0.5, 0.5, f"{title}: none", ha="center", va="center")
        return _png(fig)
    n, c, h, w = images.shape
    gap_y, gap_x = h // 2, w // 8  # room for a caption above each image
    mosaic = np.full((rows * (h + gap_y), columns * (w + gap_x), 3), 255, np.uint8)
    for k in range(count):
        r, col = divmod(k, columns)
        y, x = r * (h + gap_y) + gap_y, col * (w + gap_x)
        mosaic[y : y + h, x : x + w] = np.transpose(images[k], (1, 2, 0))  # grey broadcasts to RGB
    fig = Figure(figsize=(1.3 * columns, 1.45 * rows + 0.4))
    ax = fig.add_axes((0, 0, 1, 0.94 if rows > 1 else 0.85))
    ax.imshow(mosaic, interpolation="nearest")
    ax.axis("off")
    for k in range(count):
        r, col = divmod(k, columns)
        ok = true_labels[k] == predicted[k]
        ax.text(
            col * (w + gap_x) + w / 2,
            r * (h + gap_y) + gap_y * 0.9,
            f"{names[true_labels[k]]} -> {names[predicted[k]]} ({probabilities[k]:.2f})",
            fontsize=7,
            ha="center",
            va="bottom",
            color="darkgreen" if ok else "firebrick",
        )
    fig.suptitle(title)
    return _png(fig)


def curves_png(epochs: Sequence[dict], title: str) -> bytes:
    """Loss and accuracy per epoch, train and val, from EpochMetrics dicts."""
    fig = Figure(figsize=(9, 3.4))
    loss_ax, acc_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for phase, style in (("train", "-o"), ("val", "--s")):
        rows = [e for e in epochs if e["phase"] == phase]
        if not rows:
            continue
        x = [e["epoch"] for e in rows]
        loss_ax.plot(x, [e["loss"] for e in rows], style, label=phase, markersize=3)
        acc_ax.plot(x, [e["accuracy"] for e in rows], style, label=phase, markersize=3)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return _png(fig)


def scatter_png(points: Sequence[dict], x_key: str, x_label: str, title: str, log_x: bool = False) -> bytes:
    """Test accuracy against a cost (training seconds, trainable parameters), one point per job,
    labelled with its name; controls drawn hollow."""
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.add_subplot()
    for p in points:
        hollow = p.get("control", False)
        ax.scatter(p[x_key], p["accuracy"], s=40, facecolors="none" if hollow else None, edgecolors="C0")
        ax.annotate(
            p["name"], (p[x_key], p["accuracy"]), fontsize=7, xytext=(4, 3), textcoords="offset points"
        )
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel=x_label, ylabel="test accuracy", title=title)
    ax.grid(alpha=0.3)
    return _png(fig)


def per_class_f1_png(rows: Sequence[dict], class_names: Sequence[str], title: str) -> bytes:
    """Grouped bars: per-class F1 for each job (rows: {"name", "f1": [per class]})."""
    names = _short(class_names)
    n, k = len(names), max(1, len(rows))
    width = 0.8 / k
    fig = Figure(figsize=(max(7, 0.7 * n * max(1, k / 3)), 4))
    ax = fig.add_subplot()
    for i, row in enumerate(rows):
        ax.bar(np.arange(n) + i * width - 0.4 + width / 2, row["f1"], width, label=row["name"])
    ax.set_xticks(range(n), names)
    ax.set(ylabel="F1", ylim=(0, 1.05), title=title)
    ax.legend(fontsize=7, ncols=min(4, k))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _line_with_interval(
    ax, x: Sequence[float], means: Sequence, halves: Sequence, label: str, style: str, shift: float = 0.0
) -> list[float]:
    """A line of means with error bars where there is an interval (None: a single run, no bar),
    drawn `shift` to the side so that two lines' bars do not hide each other; the bars' ends."""
    kept = [(a + shift, m, h) for a, m, h in zip(x, means, halves, strict=True) if m is not None]
    if not kept:
        return []
    xs, ms, hs = zip(*kept, strict=True)
    errors = [0.0 if h is None else h for h in hs]
    ax.errorbar(xs, ms, yerr=errors if any(errors) else None, fmt=style, capsize=3, label=label)
    return [m - e for m, e in zip(ms, errors, strict=True)] + [m + e for m, e in zip(ms, errors, strict=True)]


def _accuracy_axis(ax, ends: Sequence[float]) -> None:
    """Accuracies live in 0..1: an interval of two seeds can reach past both, the axis does not."""
    if ends:
        ax.set_ylim(max(0.0, min(ends) - 0.02), min(1.0, max(ends)) + 0.02)


def layer_probes_png(rows: Sequence[dict], title: str) -> bytes:
    """Test accuracy of a linear probe after each block, pre-trained against random weights. rows:
    {"block_name", "transferred", "transferred_ci95", "random", "random_ci95"} in block order."""
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.add_subplot()
    x = list(range(len(rows)))
    ends = _line_with_interval(ax, x, [r["transferred"] for r in rows], [r["transferred_ci95"] for r in rows],
                               "pre-trained", "o-", -0.04)  # fmt: skip
    ends += _line_with_interval(ax, x, [r["random"] for r in rows], [r["random_ci95"] for r in rows],
                                "random init", "s--", 0.04)  # fmt: skip
    _accuracy_axis(ax, ends)
    ax.set_xticks(x, [r["block_name"] for r in rows])
    ax.set(xlabel="features after block", ylabel="linear probe test accuracy", title=title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def transferability_png(points: Sequence[dict], blocks: int, title: str) -> bytes:
    """Yosinski et al. (2014): test accuracy against frozen blocks, transferred and control lines.
    points: {"depth", "transferred", "transferred_ci95", "control", "control_ci95"} by depth."""
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.add_subplot()
    x = [p["depth"] for p in points]
    ends = _line_with_interval(ax, x, [p["transferred"] for p in points],
                               [p["transferred_ci95"] for p in points], "transferred (pre-trained weights)",
                               "o-", -0.04)  # fmt: skip
    ends += _line_with_interval(ax, x, [p["control"] for p in points], [p["control_ci95"] for p in points],
                                "control (random weights)", "s--", 0.04)  # fmt: skip
    _accuracy_axis(ax, ends)
    ax.set_xticks(range(blocks + 1))
    ax.set(xlabel="frozen blocks (0: full fine-tune, all: linear probe)", ylabel="test accuracy",
           title=title)  # fmt: skip
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)
