"""Server internals out of what clients read: absolute paths, connection strings, hosts and ports.

Error texts come from exceptions (a worker's MissingDataError names the folder it looked in, a broker
error the host it dialled); the API shows them, redacted here, and the logs keep them whole.

    redact("looked in /srv/tl/home/data/mnist")  # 'looked in $TRANSFERLAB_HOME/data/mnist'
    redact("no file at /mnt/other/x.json")  # 'no file at <server path>'
    redact("Error 111 connecting to redis.internal:6379")  # 'Error 111 connecting to <host>:<port>'
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from core.settings import get_settings

# Top-level names of our own routes: "/experiments/1a2b/report" in a message is a link, not a file.
API_PATHS = frozenset({"jobs", "experiments", "checkpoints", "predict", "healthz", "readyz", "docs", "redoc"})

_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://[^\s'\"<>()]+")
# A path starts after a space, quote or bracket (never inside a word, a URL or base64, which has
# "+/" and "//"), and has two or more segments: "/tmp/x", not the "/" of "train/val".
_ABSOLUTE_PATH = re.compile(r"(?<![\w/+.:~-])((?:/[\w.+~@%-]+){2,})/?")
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
# host:port ("redis:6379", "db.internal:5432", an address already replaced); not a device ("cuda:1").
_HOST_PORT = re.compile(r"(?:<host>|\b(?!cuda\b)[a-zA-Z][\w.-]*):\d{1,5}\b")


def _url(match: re.Match[str]) -> str:
    scheme = match.group(1).lower()
    if scheme in ("http", "https"):  # public download URLs help; credentials in them do not
        return re.sub(r"//[^/@\s]*@", "//", match.group(0))
    return f"{scheme}://…"


def _folders() -> list[tuple[str, str]]:
    """(absolute folder, what to show instead), longest first, so the data root wins over the home."""
    settings = get_settings()
    folders = {str(settings.data_root): "$TRANSFERLAB_DATA_DIR"} if settings.data_dir else {}
    for home in (settings.home.resolve(), settings.home.absolute()):
        folders.setdefault(str(home), "$TRANSFERLAB_HOME")
    folders.setdefault(str(Path.home()), "~")
    for prefix in (sys.prefix, sys.base_prefix):
        folders.setdefault(prefix, "$PYTHON_PREFIX")
    return sorted(((f, s) for f, s in folders.items() if f not in ("", "/")), key=lambda fs: -len(fs[0]))


def _path(match: re.Match[str]) -> str:
    path = match.group(1)
    segments = path.strip("/").split("/")
    return match.group(0) if segments[0] in API_PATHS else "<server path>"


def redact(text: str) -> str:
    """The text with connection strings cut to their scheme, folders of this server named by their
    setting ($TRANSFERLAB_HOME/checkpoints/...), other absolute paths replaced by <server path>, and
    addresses and host:port pairs by <host> and <host>:<port>."""
    text = _URL.sub(_url, text)
    for folder, shown in _folders():
        text = re.sub(re.escape(folder) + r"(?![\w-])", shown, text)
    text = _ABSOLUTE_PATH.sub(_path, text)
    text = _IPV4.sub("<host>", text)
    return _HOST_PORT.sub("<host>:<port>", text)


def redact_optional(text: str | None) -> str | None:
    return None if text is None else redact(text)
