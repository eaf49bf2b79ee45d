"""Uploaded images: only PNG and JPEG decoders, sizes checked from the header before any decoding.

    uploads = check_uploads(files, max_pixels)        # 415 / 413 from headers alone
    for group in pixel_batches(uploads, max_pixels):  # a bounded number of pixels at a time
        images = [decode(u) for u in group]

A 10 MB PNG of one colour can declare 25 megapixels, and 64 of them would decode to gigabytes; so
decoding happens in groups of at most `max_pixels` pixels, never all files at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError
from PIL import Image, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = ("PNG", "JPEG")
ALLOWED_TYPES = "image/png, image/jpeg"


@dataclass
class CheckedUpload:
    position: int  # index in the request's `files`
    filename: str
    image: Image.Image  # opened lazily: header read, pixels not yet decoded
    pixels: int


def check_uploads(files: Sequence[tuple[str | None, BinaryIO]], max_pixels: int) -> list[CheckedUpload]:
    """Open every file lazily; 415 for anything but PNG/JPEG, 413 over the pixel limit."""
    checked = []
    for position, (name, fp) in enumerate(files):
        filename = name or f"files[{position}]"
        fp.seek(0)
        try:
            image = Image.open(fp, formats=ALLOWED_FORMATS)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
            if isinstance(exc, Image.DecompressionBombError):
                raise _too_many_pixels(filename, None, max_pixels) from None
            raise HTTPException(
                status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                detail=f"files: {filename!r} is not a PNG or JPEG image; allowed types: {ALLOWED_TYPES}",
            ) from None
        width, height = image.size
        if width * height > max_pixels:
            raise _too_many_pixels(filename, (width, height), max_pixels)
        checked.append(CheckedUpload(position, filename, image, width * height))
    return checked


def pixel_batches(uploads: Sequence[CheckedUpload], budget: int) -> Iterator[list[CheckedUpload]]:
    """Consecutive groups whose pixel total stays within budget (at least one image each)."""
    group: list[CheckedUpload] = []
    total = 0
    for upload in uploads:
        if group and total + upload.pixels > budget:
            yield group
            group, total = [], 0
        group.append(upload)
        total += upload.pixels
    if group:
        yield group


def decode(upload: CheckedUpload) -> Image.Image:
    """Decode the pixels and apply the EXIF orientation; 422 for a truncated or corrupt file."""
    image = upload.image
    try:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
    except (OSError, SyntaxError, ValueError) as exc:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "files", upload.position),
                    "msg": f"{upload.filename!r} could not be decoded as {image.format}: {exc}",
                    "input": upload.filename,
                }
            ]
        ) from None
    return image


def _too_many_pixels(filename: str, size: tuple[int, int] | None, max_pixels: int) -> HTTPException:
    shape = f"{size[0]}x{size[1]} = {size[0] * size[1]} pixels" if size else "far too many pixels"
    return HTTPException(
        status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"files: {filename!r} is {shape}; the limit is {max_pixels} pixels per image "
        "(TRANSFERLAB_MAX_IMAGE_PIXELS)",
    )
