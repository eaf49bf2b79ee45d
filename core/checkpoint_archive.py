"""Checkpoints in and out as one zip: model.safetensors (the weights) and model.json (the metadata).

    write_archive(checkpoints_dir / row.path, row.sha256, out_path)      # GET /checkpoints/{id}/download
    imported = import_archive(upload, checkpoints_dir, max_bytes=...)    # POST /checkpoints
    row = record_import(session, imported, labels)

An import trusts nothing in the archive: it must hold exactly those two members; the metadata is
checked field by field (format, architecture, classes, input); the weights are copied out counting
bytes (a member's declared size can lie), their sha256 recomputed and compared with the metadata's,
and their safetensors header compared key by key, shape by shape, with the architecture's real state
dict. Nothing is unpickled: a pickle inside (a .pt, a .pkl, or one renamed .safetensors) is refused.
The files go to a temporary folder renamed into place only when all of it passed.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy.orm import Session

from core.checkpoint_labels import CheckpointLabels
from core.models import Checkpoint, new_id, utcnow
from engine.checkpoint import FORMAT, META_FILE, WEIGHTS_FILE, check_weights_fit, sha256_file
from engine.errors import CheckpointError
from engine.preprocess import InputSpec
from engine.spec import Architecture

MEMBERS = {WEIGHTS_FILE, META_FILE}
MAX_META_BYTES = 1024 * 1024  # a checkpoint's metadata is a few KB; class names make up most of it
MAX_CLASSES = 10_000
CLASS_NAME_MAX_CHARS = 100
_COPY_CHUNK = 1 << 20


class ArchiveRefused(ValueError):
    """The archive cannot be imported: `field` is the form field or archive member, `status` the HTTP
    status (413 for a size over the limit, 422 otherwise)."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_size: int = Field(ge=16, le=512)
    channels: int = Field(ge=1, le=3)
    mean: list[float]
    std: list[float]


class ImportedMeta(BaseModel):
    """The fields of model.json an import relies on; others (hyperparameters, accuracy) are kept as
    they are, for the record."""

    model_config = ConfigDict(extra="allow")

    format: str
    architecture: Architecture
    num_classes: int = Field(ge=1, le=MAX_CLASSES)
    class_names: list[str] = Field(max_length=MAX_CLASSES)
    input: _Input
    dataset: str = Field("imported", min_length=1, max_length=32)
    strategy: str | None = Field(None, max_length=16)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _consistent(self) -> ImportedMeta:
        if self.format != FORMAT:
            raise ValueError(f"format is {self.format!r}; transferlab reads {FORMAT!r}")
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class_names for num_classes {self.num_classes}")
        if any(not 1 <= len(c) <= CLASS_NAME_MAX_CHARS for c in self.class_names):
            raise ValueError(f"every class name needs 1..{CLASS_NAME_MAX_CHARS} characters")
        try:
            InputSpec.from_dict(self.input.model_dump())
        except ValueError as exc:
            raise ValueError(f"input: {exc}") from None
        return self


@dataclass(frozen=True)
class ImportedCheckpoint:
    id: str
    directory: Path  # inside the checkpoints folder, already renamed into place
    sha256: str
    size_bytes: int
    meta: dict[str, Any]


def write_archive(directory: Path, expected_sha256: str, out: Path) -> None:
    """Zip the checkpoint's two files into `out`, after checking the weights against the database's
    sha256 (a changed file is not handed out as if it were the trained one)."""
    weights = directory / WEIGHTS_FILE
    actual = sha256_file(weights)
    if actual != expected_sha256:
        raise CheckpointError(
            f"{WEIGHTS_FILE} has sha256 {actual[:12]}..., the database recorded {expected_sha256[:12]}...; "
            "the file was changed or corrupted and is not exported"
        )
    # Stored, not deflated: float weights barely compress, and an import reads them back faster.
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.write(weights, WEIGHTS_FILE)
        archive.write(directory / META_FILE, META_FILE)


def _members(archive: zipfile.ZipFile, max_bytes: int) -> dict[str, zipfile.ZipInfo]:
    infos = archive.infolist()
    names = [info.filename for info in infos]
    if sorted(names) != sorted(MEMBERS):
        extra = sorted(set(names) - MEMBERS)
        raise ArchiveRefused(
            "file",
            f"the archive must hold exactly {WEIGHTS_FILE} and {META_FILE} at its top level (weights only as "
            f"safetensors, never a pickle); it holds {names[:10]}"
            + (f", unexpected: {extra[:5]}" if extra else ""),
        )
    by_name = {info.filename: info for info in infos}
    if by_name[META_FILE].file_size > MAX_META_BYTES:
        raise ArchiveRefused(META_FILE, f"over {MAX_META_BYTES} bytes", status=413)
    if sum(info.file_size for info in infos) > max_bytes:
        raise ArchiveRefused(
            "file", f"unpacks to more than {max_bytes} bytes (TRANSFERLAB_MAX_CHECKPOINT_IMPORT_BYTES)", 413
        )
    return by_name


def _read_meta(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> ImportedMeta:
    with archive.open(info) as f:
        raw = f.read(MAX_META_BYTES + 1)  # its declared size may lie: read no more than the limit
    if len(raw) > MAX_META_BYTES:
        raise ArchiveRefused(META_FILE, f"over {MAX_META_BYTES} bytes", status=413)
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArchiveRefused(META_FILE, f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ArchiveRefused(META_FILE, "must be a JSON object")
    try:
        return ImportedMeta.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "metadata"
        raise ArchiveRefused(META_FILE, f"{where}: {first['msg']}") from None


def _copy_counted(source: IO[bytes], target: Path, max_bytes: int) -> tuple[str, int]:
    """Copy, hashing and counting; ArchiveRefused(413) at the first chunk past max_bytes."""
    digest = hashlib.sha256()
    written = 0
    with open(target, "wb") as out:
        while chunk := source.read(_COPY_CHUNK):
            written += len(chunk)
            if written > max_bytes:
                raise ArchiveRefused(
                    WEIGHTS_FILE,
                    f"unpacks to more than {max_bytes} bytes (TRANSFERLAB_MAX_CHECKPOINT_IMPORT_BYTES)",
                    413,
                )
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest(), written


def import_archive(upload: IO[bytes], checkpoints_dir: Path, *, max_bytes: int) -> ImportedCheckpoint:
    """Check and unpack an archive into a new folder of checkpoints_dir; ArchiveRefused, with nothing
    left on disk, when any check fails."""
    try:
        archive = zipfile.ZipFile(upload)
    except (zipfile.BadZipFile, OSError):
        raise ArchiveRefused(
            "file", "not a zip archive; send the file GET /checkpoints/{id}/download gives"
        ) from None
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_id = new_id()
    tmp = checkpoints_dir / f".import-{checkpoint_id}-{secrets.token_hex(4)}.tmp"
    tmp.mkdir()
    try:
        with archive:
            members = _members(archive, max_bytes)
            meta = _read_meta(archive, members[META_FILE])
            weights = tmp / WEIGHTS_FILE
            try:
                with archive.open(members[WEIGHTS_FILE]) as source:
                    sha, size = _copy_counted(source, weights, max_bytes)
            except (zipfile.BadZipFile, zlib.error) as exc:  # a CRC or stream error: damaged in transit
                raise ArchiveRefused(WEIGHTS_FILE, f"could not be unpacked: {exc}") from None
        if meta.sha256 is not None and meta.sha256 != sha:
            raise ArchiveRefused(
                WEIGHTS_FILE,
                f"its sha256 is {sha[:12]}..., but {META_FILE} records {meta.sha256[:12]}...; the weights "
                "were changed or damaged and are not imported",
            )
        try:
            check_weights_fit(weights, meta.architecture.value, meta.num_classes)
        except CheckpointError as exc:
            raise ArchiveRefused(WEIGHTS_FILE, str(exc)) from None
        full_meta = {
            **meta.model_dump(mode="json"),
            "sha256": sha,
            "size_bytes": size,
            "origin": "imported",
            "imported_at": utcnow().isoformat(),
        }
        (tmp / META_FILE).write_text(json.dumps(full_meta, indent=2))
        final = checkpoints_dir / checkpoint_id
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ImportedCheckpoint(checkpoint_id, final, sha, size, full_meta)


def record_import(
    session: Session, imported: ImportedCheckpoint, checkpoints_dir: Path, labels: CheckpointLabels
) -> Checkpoint:
    """The checkpoint row of an imported archive (no job); the caller commits."""
    meta = imported.meta
    row = Checkpoint(
        id=imported.id,
        job_id=None,
        architecture=meta["architecture"],
        dataset=meta["dataset"],
        strategy=meta.get("strategy"),
        class_names=list(meta["class_names"]),
        input_spec=meta["input"],
        path=imported.directory.resolve().relative_to(checkpoints_dir.resolve()).as_posix(),
        sha256=imported.sha256,
        size_bytes=imported.size_bytes,
        name=labels.name,
        tags=labels.tags or [],
        origin="imported",
    )
    session.add(row)
    session.flush()
    return row
