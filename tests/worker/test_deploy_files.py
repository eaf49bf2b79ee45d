"""The deployment files say what the code does: every setting documented, compose wired, CI = README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_env_example_documents_every_setting_with_its_default():
    text = (ROOT / ".env.example").read_text()
    for name, field in Settings.model_fields.items():
        match = re.search(rf"^# TRANSFERLAB_{name.upper()}=(.*)$", text, re.MULTILINE)
        assert match, f"TRANSFERLAB_{name.upper()} is missing from .env.example"
        shown, default = match.group(1), field.default
        if isinstance(default, bool):
            assert shown == str(default).lower(), name
        elif isinstance(default, (int, float)):
            assert float(shown) == default, name
        elif isinstance(default, str):
            assert shown == default, name


def test_compose_runs_postgres_redis_an_api_and_a_gpu_worker():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "api", "worker"} <= set(services)
    api, worker = services["api"], services["worker"]
    assert api["environment"]["TRANSFERLAB_EMBEDDED_WORKERS"] == "0"
    for service in (api, worker):
        assert service["environment"]["TRANSFERLAB_BROKER_URL"].startswith("redis://")
        assert service["environment"]["TRANSFERLAB_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert any(v.startswith("state:") for v in service["volumes"])
    device = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert (device["driver"], device["count"], device["capabilities"]) == ("nvidia", 1, ["gpu"])
    assert all("healthcheck" in services[name] for name in services)
    assert {"state", "data"} <= set(compose["volumes"])


def test_the_image_runs_the_transferlab_command_on_a_cuda_pytorch_base():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM pytorch/pytorch:\S+-cuda\S+-runtime$", text, re.MULTILINE)
    assert 'ENTRYPOINT ["transferlab"]' in text


def readme_test_command() -> str:
    text = (ROOT / ".ci/run").read_text()
    block = text.split("# ---- README test command")[1].split("# ---- end of README test command")[0]
    lines = [line for line in block.splitlines()[1:] if line.strip()]
    assert len(lines) == 1, "the README test command must stay one line"
    return lines[0].strip()


def test_ci_runs_exactly_the_readme_test_command():
    command = readme_test_command()
    assert command.endswith("-m pytest")
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("no README.md yet")
    assert command in readme.read_text()
