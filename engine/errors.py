"""Errors the engine raises. Each says what was wrong, what was allowed, and what to do next."""

from __future__ import annotations

from pathlib import Path


class EngineError(Exception):
    """Base class: anything the engine refuses or cannot do."""


class MissingDataError(EngineError):
    """A data set's files are not where they should be, and downloading is off or failed."""

    def __init__(self, dataset: str, folder: Path, expected_files: list[str], reason: str = ""):
        self.dataset = dataset
        self.folder = Path(folder)
        self.expected_files = list(expected_files)
        hint = reason or "downloads are off (set TRANSFERLAB_DOWNLOAD=true, or download=True, to fetch it)"
        super().__init__(
            f"data set {dataset!r} is missing: looked in {self.folder} "
            f"for {', '.join(self.expected_files)}; {hint}"
        )


class DataFormatError(EngineError):
    """A data file exists but is not in the format its data set uses."""


class SpecError(EngineError, ValueError):
    """A spec value that passed its own bounds but does not fit the model or data (e.g. frozen_blocks)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class CheckpointError(EngineError):
    """A checkpoint is missing, malformed, or its bytes do not match the recorded sha256."""


class JobCancelled(EngineError):
    """The hooks asked the run to stop; raised between batches, or instead of writing a state or weights."""


class DiskFullError(EngineError, OSError):
    """The state folder's disk (or quota) is full: a checkpoint or resume state could not be written.
    Nothing half-written is left behind (engine.durable writes beside, then renames)."""
