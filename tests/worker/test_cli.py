"""The `transferlab` command: fast help, migrate, a worker that refuses a missing GPU, worker stop."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.main import build_parser, stop_workers

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, home: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSFERLAB_")}
    env["TRANSFERLAB_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_lists_the_three_commands_without_loading_torch_or_celery():
    code = (
        "import sys\n"
        "from cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = {'torch', 'celery', 'fastapi', 'uvicorn'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert all(command in done.stdout for command in ("serve", "worker", "migrate"))


def test_the_options_have_their_documented_defaults():
    parser = build_parser()
    serve = parser.parse_args(["serve"])
    assert (serve.host, serve.port, serve.workers) == ("127.0.0.1", 8000, None)
    worker = parser.parse_args(["worker", "--device", "cuda:1"])
    assert (worker.device, worker.concurrency) == ("cuda:1", 1)


def test_migrate_creates_the_schema(tmp_path):
    done = run_cli("migrate", home=tmp_path)
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(tmp_path / "transferlab.sqlite") as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type='table'")}
    assert {"jobs", "epoch_metrics", "evaluations", "costs", "checkpoints"} <= tables


def test_a_worker_asked_for_a_gpu_this_machine_lacks_refuses_to_start(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = run_cli("worker", "--device", "cuda:0", home=tmp_path)
    assert done.returncode == 2
    assert "no CUDA device" in done.stderr


def test_stopping_workers_kills_one_that_ignores_sigterm():
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert stubborn.stdout.readline().strip() == "ready"
    started = time.monotonic()
    stop_workers([stubborn], timeout_seconds=0.5)
    assert stubborn.returncode == -9 and time.monotonic() - started < 10


def test_migrate_downgrade_to_base_needs_drop_all_data(tmp_path):
    assert run_cli("migrate", home=tmp_path).returncode == 0
    refused = run_cli("migrate", "--downgrade", "base", home=tmp_path)
    assert refused.returncode == 2 and "--drop-all-data" in refused.stderr
    with sqlite3.connect(tmp_path / "transferlab.sqlite") as db:
        assert db.execute("select count(*) from sqlite_master where name='jobs'").fetchone() == (1,)
    done = run_cli("migrate", "--downgrade", "base", "--drop-all-data", home=tmp_path)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
def test_serve_refuses_a_non_loopback_address_without_a_token(tmp_path, host):
    done = run_cli("serve", "--host", host, "--port", "0", home=tmp_path)
    assert done.returncode == 2
    assert "TRANSFERLAB_API_TOKEN" in done.stderr and "--insecure-no-token" in done.stderr
    assert not (tmp_path / "transferlab.sqlite").exists()  # refused before anything was written


def test_the_exposure_rule_allows_loopback_a_token_or_an_explicit_opt_out():
    from cli.main import exposure_problem

    assert exposure_problem("127.0.0.1", None, False) is None
    assert exposure_problem("localhost", None, False) is None
    assert exposure_problem("0.0.0.0", "a-token", False) is None
    assert exposure_problem("0.0.0.0", None, True) is None
    assert "TRANSFERLAB_API_TOKEN" in exposure_problem("0.0.0.0", None, False)


def test_production_refuses_a_short_token():
    from pydantic import ValidationError

    from core.settings import Settings

    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings(environment="production", api_token="short")
    assert Settings(environment="production", api_token="x" * 32).api_token


def test_serve_says_where_the_api_docs_dashboard_and_probes_are(capsys: pytest.CaptureFixture[str]):
    from cli.main import print_addresses

    print_addresses("0.0.0.0", 8123)

    out = capsys.readouterr().out
    for address in ("API http://127.0.0.1:8123", "/docs", "/ui", "/healthz", "/readyz", "/metrics"):
        assert address in out, address


def test_json_log_format_makes_every_line_of_a_command_one_json_object(tmp_path):
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSFERLAB_")}
    env.update(TRANSFERLAB_HOME=str(tmp_path), TRANSFERLAB_LOG_FORMAT="json")
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "migrate"], cwd=ROOT, env=env, capture_output=True, text=True
    )

    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines and all(json.loads(line)["level"] for line in lines)
    assert any("Running upgrade" in json.loads(line)["message"] for line in lines)
