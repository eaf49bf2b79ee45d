"""A checkpoint's name and tags: what PATCH /checkpoints/{id} (and an import) may set, with bounds.

    CheckpointLabels(name="digits-v2", tags=["mnist", "resnet18", "best so far"])

A name is what /predict's `model=` looks up (the newest checkpoint with it), so it is a plain token;
tags are free text, a few short ones (bounded so a row and a listing stay small).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

NAME_MAX_CHARS = 100  # checkpoints.name is String(100)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
MAX_TAGS = 16
TAG_MAX_CHARS = 64

Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=TAG_MAX_CHARS)]


class CheckpointLabels(BaseModel):
    """The body of PATCH /checkpoints/{id}: a field left out stays as it is; name null removes it."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        None,
        min_length=1,
        max_length=NAME_MAX_CHARS,
        pattern=NAME_PATTERN,
        description=f"1..{NAME_MAX_CHARS} letters, digits, '.', '_' or '-', starting with a letter or "
        "digit; POST /predict with model=<name> uses the newest checkpoint of that name. null removes it.",
    )
    tags: list[Tag] | None = Field(
        None,
        max_length=MAX_TAGS,
        description=f"Free-form labels, at most {MAX_TAGS} of 1..{TAG_MAX_CHARS} characters; replaces the "
        "checkpoint's tags (duplicates are kept once).",
    )

    @field_validator("tags")
    @classmethod
    def _printable_and_once(cls, tags: list[str] | None) -> list[str] | None:
        if tags is None:
            return None
        for tag in tags:
            if not tag.isprintable():
                raise ValueError(f"tag {tag!r} holds a control character; tags are printable text")
        return list(dict.fromkeys(tags))
