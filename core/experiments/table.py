"""The comparison table, formatted once for the report and the CLI, and the number formats behind it.

Rows are plain dicts, the way the API sends them (the report passes `row.model_dump()`), so the CLI,
an HTTP client, imports nothing of the database, the engine or torch: this module needs only the
standard library.

    header, cells = comparison_cells(rows, REPORT_STYLE)  # units in the cells: "12.3 s", "+1.20 points"
    header, cells = comparison_cells(rows, CLI_STYLE)     # units in the header: "train s", "gain pts"
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

NA = "n/a"

Row = Mapping[str, Any]  # one ComparisonRow, as a dict


# ---------------------------------------------------------------- numbers as cells


def pct(x: float | None, missing: str = NA) -> str:
    """An accuracy in 0..1 as a percentage: '93.25%'."""
    return missing if x is None else f"{100 * x:.2f}%"


def points(x: float | None, missing: str = NA, unit: bool = True) -> str:
    """A difference of accuracies in percentage points: '+3.10 points'."""
    return missing if x is None else f"{100 * x:+.2f}" + (" points" if unit else "")


def seconds(x: float | None, missing: str = NA, unit: bool = True) -> str:
    return missing if x is None else f"{x:.1f}" + (" s" if unit else "")


def count(x: int | None, missing: str = NA) -> str:
    return missing if x is None else f"{x:,}"


def mib(x: int | None, missing: str = NA, unit: bool = True) -> str:
    """Bytes in MiB: '300 MiB'."""
    return missing if x is None else f"{x / 2**20:,.0f}" + (" MiB" if unit else "")


def f1(x: float | None, missing: str = NA) -> str:
    return missing if x is None else f"{x:.4f}"


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class TableStyle:
    columns: tuple[str, ...]  # keys of COLUMNS, in order
    units: bool  # units in the cells and long headers, or units in the short headers only
    missing: str  # a value the run does not have (it failed, or never measured it)
    no_gain: str  # a fine-tune without a gain (its control failed); a control's gain is always blank
    chosen: str  # marks the run each variant chose


@dataclass(frozen=True)
class Column:
    long: str  # header when the cells carry their units
    short: str  # header when they do not: it carries the unit
    cell: Callable[[Row, TableStyle], str]


def _gain(row: Row, style: TableStyle) -> str:
    if row["control"] or row["role"] == "baseline":
        return ""
    return points(row["transfer_gain"], style.no_gain, style.units)


COLUMNS: dict[str, Column] = {
    "job_id": Column("job", "job", lambda r, s: r["job_id"][:8]),
    "role": Column("role", "role", lambda r, s: str(r["role"])),
    "variant": Column("variant", "variant", lambda r, s: str(r["variant"])),
    "frozen_blocks": Column(
        "frozen blocks",
        "frozen",
        lambda r, s: s.missing if r["frozen_blocks"] is None else str(r["frozen_blocks"]),
    ),
    "optimizer": Column("optimiser", "opt", lambda r, s: str(r["optimizer"])),
    "lr": Column("lr", "lr", lambda r, s: f"{r['lr']:g}"),
    "batch_size": Column("batch", "batch", lambda r, s: str(r["batch_size"])),
    "status": Column("status", "status", lambda r, s: str(r["status"])),
    "val_accuracy": Column("val acc", "val", lambda r, s: pct(r["val_accuracy"], s.missing)),
    "test_accuracy": Column("test acc", "test", lambda r, s: pct(r["test_accuracy"], s.missing)),
    "macro_f1": Column("macro F1", "macroF1", lambda r, s: f1(r["macro_f1"], s.missing)),
    "train_seconds": Column(
        "train time", "train s", lambda r, s: seconds(r["train_seconds"], s.missing, s.units)
    ),
    "trainable_parameters": Column(
        "trainable params", "trainable", lambda r, s: count(r["trainable_parameters"], s.missing)
    ),
    "parameter_updates": Column(
        "param updates", "updates", lambda r, s: count(r["parameter_updates"], s.missing)
    ),
    "peak_memory_bytes": Column(
        "peak memory", "peak MiB", lambda r, s: mib(r["peak_memory_bytes"], s.missing, s.units)
    ),
    "transfer_gain": Column("transfer gain", "gain pts", _gain),
    "epochs_run": Column(
        "epochs run",
        "epochs",
        lambda r, s: s.missing if r.get("epochs_run") is None else f"{r['epochs_run']}/{r['epochs']}",
    ),
    "chosen": Column("chosen", "chosen", lambda r, s: s.chosen if r["chosen"] else ""),
}

# The report's "every run" table (Markdown and HTML).
REPORT_STYLE = TableStyle(
    columns=(
        "job_id",
        "role",
        "variant",
        "frozen_blocks",
        "optimizer",
        "lr",
        "batch_size",
        "status",
        "val_accuracy",
        "test_accuracy",
        "macro_f1",
        "train_seconds",
        "trainable_parameters",
        "parameter_updates",
        "epochs_run",
        "peak_memory_bytes",
        "transfer_gain",
        "chosen",
    ),  # fmt: skip
    units=True,
    missing=NA,
    no_gain=NA,
    chosen="yes",
)

# `transferlab experiment`'s table in a terminal: narrower, the units in the headers.
CLI_STYLE = TableStyle(
    columns=(
        "variant",
        "role",
        "optimizer",
        "lr",
        "batch_size",
        "status",
        "val_accuracy",
        "test_accuracy",
        "macro_f1",
        "train_seconds",
        "trainable_parameters",
        "parameter_updates",
        "peak_memory_bytes",
        "transfer_gain",
        "chosen",
    ),  # fmt: skip
    units=False,
    missing="-",
    no_gain="",
    chosen="*",
)


def comparison_cells(rows: Iterable[Row], style: TableStyle) -> tuple[list[str], list[list[str]]]:
    """The header and one list of cells per row, in the style's columns."""
    columns = [COLUMNS[key] for key in style.columns]
    header = [c.long if style.units else c.short for c in columns]
    return header, [[c.cell(row, style) for c in columns] for row in rows]
