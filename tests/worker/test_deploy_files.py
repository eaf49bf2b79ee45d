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


def test_compose_requires_a_token_and_runs_in_production():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name in ("api", "worker"):
        environment = compose["services"][name]["environment"]
        assert environment["TRANSFERLAB_ENVIRONMENT"] == "production"
        assert environment["TRANSFERLAB_API_TOKEN"].startswith("${TRANSFERLAB_API_TOKEN:?")


def test_the_constraints_pin_every_direct_dependency_at_or_above_its_floor():
    import tomllib

    from packaging.requirements import Requirement

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [
        Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]
    ]
    for requirement in requirements:
        name = requirement.name.lower().replace("_", "-")
        if name in ("torch", "torchvision"):
            continue  # from the base image or the machine's copy (see constraints.txt)
        assert name in pins, f"{name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is below {requirement}"


def test_dependency_floors_stay_above_the_known_cves():
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    floors = {"python-multipart": "0.0.27", "starlette": "1.3.1", "pillow": "12.3"}
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    named = {Requirement(d).name: Requirement(d) for d in dependencies}
    for name, floor in floors.items():
        lowest = min((s.version for s in named[name].specifier if s.operator == ">="), key=Version)
        assert Version(lowest) >= Version(floor), f"{name} floor {lowest} is below {floor}"


def test_compose_has_an_ops_profile_with_prometheus_scraping_the_api_and_flower():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    prometheus, flower = compose["services"]["prometheus"], compose["services"]["flower"]
    assert prometheus["profiles"] == ["ops"] and flower["profiles"] == ["ops"]
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert "--broker=redis://redis:6379/0" in flower["command"] and "flower" in flower["command"]
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    api = next(job for job in scrape["scrape_configs"] if job["job_name"] == "transferlab-api")
    assert api["metrics_path"] == "/metrics" and api["static_configs"][0]["targets"] == ["api:8000"]
    assert api["authorization"]["type"] == "Bearer"  # the API token, unless METRICS_PUBLIC


def test_the_readme_shows_the_flower_command_and_the_operations_section():
    readme = (ROOT / "README.md").read_text()
    assert "celery -A worker.celery_app flower" in readme
    for heading in ("## Operations", "### Metrics", "### Logs", "### Deleting"):
        assert heading in readme, heading


def test_the_readme_settings_table_lists_exactly_the_settings():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `TRANSFERLAB_([A-Z0-9_]+)` \|", table, re.MULTILINE))
    assert listed == {name.upper() for name in Settings.model_fields}
