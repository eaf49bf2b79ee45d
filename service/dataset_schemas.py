"""Response models of /datasets (the list, one data set with its per-class counts)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class DatasetPublic(BaseModel):
    """A data set the service knows: a built-in, or a folder under <data root>/folders."""

    name: str = Field(description="What a job's `dataset` field takes.")
    kind: Literal["builtin", "folder"] = Field(
        description="builtin (a fixed format) or folder (your images)."
    )
    folder: str = Field(description="Where its files are, relative to the data root.")
    present: bool = Field(description="Whether its files are under the data root.")
    missing_files: list[str] = Field(
        description="Files absent from `folder` (built-ins); empty when present."
    )
    problem: str | None = Field(
        description="Why a folder data set cannot be used (layout, limits, a bad file); null when it can."
    )
    split_sizes: dict[str, int] | None = Field(description="Images in train and test; null when absent.")
    classes: list[str] = Field(description="Class names in label order (a folder set's sorted sub-folders).")
    channels: int | None = Field(description="1 (grey) or 3 (colour), as stored.")
    native_size: int | None = Field(
        description="Side of the images in pixels: a built-in's files, a folder set's median shorter side."
    )
    stored_size: int | None = Field(
        description="Side the decoded images are cached at (a folder set: declared, or the median capped "
        "by TRANSFERLAB_FOLDER_MAX_IMAGE_SIDE); jobs resize it to data.image_size."
    )

    @classmethod
    def from_summary(cls, summary: Any) -> DatasetPublic:
        """From engine.datasets.DatasetSummary."""
        return cls(
            name=summary.name,
            kind=summary.kind,
            folder=summary.folder,
            present=summary.present,
            missing_files=summary.missing_files,
            problem=summary.problem,
            split_sizes=summary.split_sizes,
            classes=list(summary.class_names),
            channels=summary.channels,
            native_size=summary.native_size,
            stored_size=summary.stored_size,
        )


class DatasetList(BaseModel):
    data: list[DatasetPublic] = Field(description="The built-ins first, then the folder data sets by name.")
    count: int = Field(description="How many data sets are listed.")


class SampleGridLink(BaseModel):
    url: str = Field(description="A PNG of a few test images of each class.")
    media_type: str = Field("image/png", description="Its media type.")


class DatasetDetailPublic(DatasetPublic):
    """One data set with its per-class image counts and a sample grid."""

    class_counts: dict[str, list[int]] | None = Field(
        description="Per split, the images of each class in `classes` order; null when not usable."
    )
    sample_grid: SampleGridLink | None = Field(description="The sample grid; null when not usable.")
