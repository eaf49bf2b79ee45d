"""The layer rule, read from the source with `ast` (function-local imports included):

    service -> core -> engine        worker -> core -> engine        cli -> anything

service and worker never import each other; core imports neither; engine imports nothing of ours and
no web, queue or database library. Only cli, the composition root, may import both service and worker.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"engine", "core", "service", "worker", "cli"}
WEB_QUEUE_DB = {
    "fastapi",
    "starlette",
    "uvicorn",
    "celery",
    "kombu",
    "redis",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "httpx",
}
HTTP = {"fastapi", "starlette", "uvicorn"}
FORBIDDEN: dict[str, set[str]] = {
    "engine": (OURS - {"engine"}) | WEB_QUEUE_DB,
    "core": {"service", "worker", "cli"} | HTTP,
    "service": {"worker", "cli"},
    "worker": {"service", "cli"},
    "cli": set(),
}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in the file, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append((node.lineno, path.relative_to(ROOT).parts[0]))  # relative: its own package
    return found


def violations(package: str) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, name in imported_packages(path)
        if name in FORBIDDEN[package]
    ]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down_only(package):
    assert violations(package) == []


def test_the_checker_sees_function_local_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from worker.tasks import run_job\n    import service.main\n")
    assert [name for _, name in imported_packages(module)] == ["worker", "service"]
