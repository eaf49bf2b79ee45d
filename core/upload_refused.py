"""Why an upload (a data set archive) was refused, as the API answers it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class UploadRefused(Exception):
    """Why an upload was refused: the HTTP status (409, 413, 415, 422), the form field, the reason."""

    status_code: int
    field: str
    message: str

    def __str__(self) -> str:
        return self.message
