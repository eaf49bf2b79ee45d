"""Data sets: the built-ins and your folder data sets, what each holds, and uploads of new ones."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Path, Response, UploadFile, status
from fastapi.exceptions import RequestValidationError

from core import datasets
from core.dataset_upload import UploadRefused, install_archive
from engine.spec import DATASET_NAME_PATTERN
from service.dataset_schemas import DatasetDetailPublic, DatasetList, DatasetPublic, SampleGridLink
from service.deps import SettingsDep
from service.errors import Responses, not_found
from service.schemas import ErrorPublic

router = APIRouter(prefix="/datasets", tags=["datasets"])

NameParam = Annotated[str, Path(pattern=DATASET_NAME_PATTERN, description="A name GET /datasets lists.")]
NOT_FOUND: Responses = {404: {"model": ErrorPublic, "description": "No data set of that name."}}


@router.get("", response_model=DatasetList)
def list_datasets(settings: SettingsDep) -> DatasetList:
    """Every data set: the four built-ins, then the folders under <data root>/folders, with whether
    their files are present, split sizes, classes, channels and image size (no image is decoded)."""
    rows = [DatasetPublic.from_summary(s) for s in datasets.list_datasets(settings)]
    return DatasetList(data=rows, count=len(rows))


@router.get("/{name}", response_model=DatasetDetailPublic, responses=NOT_FOUND)
def get_dataset(settings: SettingsDep, name: NameParam) -> DatasetDetailPublic:
    """One data set with its per-class image counts and a link to a grid of sample images. The first
    call decodes its splits into the data root's cache (seconds for a large set)."""
    detail = datasets.dataset_detail(settings, name)
    if detail is None:
        raise not_found("data set", name)
    usable = detail.class_counts is not None
    return DatasetDetailPublic(
        **DatasetPublic.from_summary(detail.summary).model_dump(),
        class_counts=detail.class_counts,
        sample_grid=SampleGridLink(url=f"/datasets/{name}/samples.png") if usable else None,
    )


@router.get(
    "/{name}/samples.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "The grid."}, **NOT_FOUND},
)
def get_sample_grid(settings: SettingsDep, name: NameParam) -> Response:
    """A PNG of the first test images of each class, captioned with the class names."""
    detail = datasets.dataset_detail(settings, name)
    if detail is None:
        raise not_found("data set", name)
    if detail.class_counts is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"data set {name!r} has no usable images; see GET /datasets/{name}",
        )
    return Response(datasets.sample_grid_png(settings, name), media_type="image/png")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetPublic,
    responses={
        409: {"model": ErrorPublic, "description": "A data set of that name exists."},
        413: {
            "model": ErrorPublic,
            "description": "The body, the archive's entries, its unpacked size or a zip entry's compression "
            "ratio is over its limit.",
        },
        415: {"model": ErrorPublic, "description": "A file in the archive is not a PNG or JPEG image."},
    },
)
def upload_dataset(
    settings: SettingsDep,
    response: Response,
    name: Annotated[
        str, Form(description="The new data set's name: 1-32 of a-z, 0-9, '_' and '-', not a built-in's.")
    ],
    file: Annotated[
        UploadFile,
        Form(
            description="A zip or tar (.tar, .tar.gz, .tar.bz2, .tar.xz) of train/<class>/<image> and "
            "test/<class>/<image> (PNG or JPEG)."
        ),
    ],
) -> DatasetPublic:
    """Add a folder data set from a zip or a tar. Refused with nothing written: absolute paths or '..',
    links, devices, a path twice, more entries or unpacked bytes than the limits (a zip bomb, or a tar
    whose decompressed stream runs past them), anything but PNG and JPEG,
    a missing split or an empty class."""
    try:
        install_archive(settings, name, file.file)
    except UploadRefused as exc:
        if exc.status_code == 422:
            error = {"type": "value_error", "loc": ("body", exc.field), "msg": exc.message, "input": name}
            raise RequestValidationError([error]) from None
        raise HTTPException(exc.status_code, detail=exc.message) from None
    summary = next(s for s in datasets.list_datasets(settings) if s.name == name)
    response.headers["Location"] = f"/datasets/{name}"
    return DatasetPublic.from_summary(summary)
