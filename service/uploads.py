"""Uploaded images: only PNG and JPEG decoders, checked from their headers, decoded one at a time.

    uploads = check_uploads(files, max_pixels)   # 415 / 413 from headers alone; nothing stays open
    for upload in uploads:
        image = decode(upload)                   # opened again, decoded; the caller closes it

A 10 MB PNG of one colour can declare 25 megapixels, so no two files are decoded at once; and a PNG's
text chunks are metadata we never use, so they are dropped as soon as a file is opened.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

ALLOWED_FORMATS = ("PNG", "JPEG")
ALLOWED_TYPES = "image/png, image/jpeg"

# Pillow keeps a PNG's text chunks (tEXt, zTXt, iTXt) in memory, decompressed, up to 1 MiB a chunk and
# 64 MiB a file by default: a 66 KB PNG of zTXt chunks pinned 63 MiB, and 64 of them fit in a 10 MiB
# request. Real text metadata is a few KB; the ICC profile (iCCP, under the same per-chunk limit) of
# sRGB and Display P3 is 3 KB. Set once, for this process: the API reads no other PNGs.
PngImagePlugin.MAX_TEXT_CHUNK = 64 * 1024
PngImagePlugin.MAX_TEXT_MEMORY = 256 * 1024
# Pillow parses chunks in Python (about 2 us each) and inflates every text chunk, even one with an empty
# keyword it then drops: a 10 MiB PNG of such zTXt chunks took 18 s of CPU to open with 64 KiB
# chunks. Encoders write image data in chunks of 8 KiB or more (libpng), so a PNG under the body limit
# has under 1,300; a PNG over either count is refused before Pillow reads it.
MAX_PNG_CHUNKS = 4096
MAX_PNG_METADATA_CHUNKS = 32  # tEXt, zTXt, iTXt and iCCP together
_METADATA_CHUNKS = (b"tEXt", b"zTXt", b"iTXt", b"iCCP")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# ImageOps.exif_transpose reads a PNG's orientation from these text keys too; they are kept.
_EXIF_TEXT_KEYS = ("exif", "Raw profile type exif")


@dataclass(frozen=True)
class CheckedUpload:
    position: int  # index in the request's `files`
    filename: str
    file: BinaryIO
    pixels: int


class _MetadataOverLimit(Exception):
    """A PNG's chunks or text are over our limits or Pillow's (MAX_TEXT_CHUNK, MAX_TEXT_MEMORY)."""


def check_uploads(files: Sequence[tuple[str | None, BinaryIO]], max_pixels: int) -> list[CheckedUpload]:
    """Open each file in turn and close it again; 415 for anything but PNG/JPEG, 413 over the pixel
    limit or the metadata limits."""
    checked = []
    for position, (name, fp) in enumerate(files):
        filename = name or f"files[{position}]"
        try:
            image = _open(fp)
        except _MetadataOverLimit as exc:
            raise _too_much_metadata(filename, str(exc)) from None
        except Image.DecompressionBombError:
            raise _too_many_pixels(filename, None, max_pixels) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise HTTPException(
                status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                detail=f"files: {filename!r} is not a PNG or JPEG image; allowed types: {ALLOWED_TYPES}",
            ) from None
        with image:  # leaves our file open (Image.close() would close it): it is read again
            width, height = image.size
        if width * height > max_pixels:
            raise _too_many_pixels(filename, (width, height), max_pixels)
        checked.append(CheckedUpload(position, filename, fp, width * height))
    return checked


def decode(upload: CheckedUpload) -> Image.Image:
    """Open the checked file again, decode the pixels and apply the EXIF orientation; 413 for text
    after the image data over the limits, 422 for a truncated or corrupt file. The caller closes it."""
    image = None
    try:
        image = _open(upload.file)
        image.load()
        _drop_text(image)  # text chunks after the image data are read by load()
        ImageOps.exif_transpose(image, in_place=True)
    except (_MetadataOverLimit, OSError, SyntaxError, ValueError) as exc:
        if image is not None:
            image.close()
        if isinstance(exc, _MetadataOverLimit):
            raise _too_much_metadata(upload.filename, str(exc)) from None
        if _is_text_limit(exc):
            raise _too_much_metadata(upload.filename, _text_limit_reason(exc)) from None
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "files", upload.position),
                    "msg": f"{upload.filename!r} could not be decoded as "
                    f"{image.format if image else 'PNG or JPEG'}: {exc}",
                    "input": upload.filename,
                }
            ]
        ) from None
    return image


def _open(fp: BinaryIO) -> Image.Image:
    """Read the header (not the pixels), after counting a PNG's chunks; its text is dropped at once."""
    fp.seek(0)
    _count_png_chunks(fp)
    fp.seek(0)
    try:
        image = Image.open(fp, formats=ALLOWED_FORMATS)
    except ValueError as exc:
        if _is_text_limit(exc):
            raise _MetadataOverLimit(_text_limit_reason(exc)) from None
        raise
    _drop_text(image)
    return image


def _count_png_chunks(fp: BinaryIO) -> None:
    """Walk a PNG's chunk headers (seeking past their data): _MetadataOverLimit past either count."""
    if fp.read(8) != _PNG_SIGNATURE:
        return  # not a PNG: Pillow decides
    chunks = metadata = 0
    while len(header := fp.read(8)) == 8:
        length, kind = struct.unpack(">I4s", header)
        chunks += 1
        metadata += kind in _METADATA_CHUNKS
        if chunks > MAX_PNG_CHUNKS:
            raise _MetadataOverLimit(f"more than {MAX_PNG_CHUNKS} chunks")
        if metadata > MAX_PNG_METADATA_CHUNKS:
            raise _MetadataOverLimit(f"more than {MAX_PNG_METADATA_CHUNKS} text and ICC profile chunks")
        if kind == b"IEND":
            return
        fp.seek(length + 4, os.SEEK_CUR)  # the data and its CRC


def _drop_text(image: Image.Image) -> None:
    """Forget a PNG's text chunks, which Pillow keeps in .text and .info (the EXIF ones stay)."""
    if not isinstance(image, PngImagePlugin.PngImageFile):
        return
    texts = image._text if image._text is not None else image.png.im_text if image.png else {}
    for key in [key for key in texts if key not in _EXIF_TEXT_KEYS]:
        if image.info.get(key) is texts[key]:  # not a chunk Pillow stored under the same name
            del image.info[key]
        del texts[key]


def _is_text_limit(exc: Exception) -> bool:
    """Pillow's ValueError for a text or ICC chunk over MAX_TEXT_CHUNK or MAX_TEXT_MEMORY."""
    return isinstance(exc, ValueError) and "MAX_TEXT" in str(exc)


def _text_limit_reason(exc: Exception) -> str:
    if "MAX_TEXT_MEMORY" in str(exc):
        return f"over {PngImagePlugin.MAX_TEXT_MEMORY} bytes of text"
    return f"a text or ICC profile chunk of over {PngImagePlugin.MAX_TEXT_CHUNK} bytes"


def _too_much_metadata(filename: str, what: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"files: {filename!r} carries too much PNG metadata ({what}); the limits are "
        f"{MAX_PNG_CHUNKS} chunks, {MAX_PNG_METADATA_CHUNKS} text and ICC profile chunks, "
        f"{PngImagePlugin.MAX_TEXT_CHUNK} bytes a chunk and {PngImagePlugin.MAX_TEXT_MEMORY} bytes "
        "of text a file, decompressed; strip the metadata (e.g. `mogrify -strip`) and send it again",
    )


def _too_many_pixels(filename: str, size: tuple[int, int] | None, max_pixels: int) -> HTTPException:
    shape = f"{size[0]}x{size[1]} = {size[0] * size[1]} pixels" if size else "far too many pixels"
    return HTTPException(
        status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"files: {filename!r} is {shape}; the limit is {max_pixels} pixels per image "
        "(TRANSFERLAB_MAX_IMAGE_PIXELS)",
    )
