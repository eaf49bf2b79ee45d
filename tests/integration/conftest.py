"""The service for real: `transferlab serve` and `transferlab worker` processes over PostgreSQL and
Redis on this machine (or SQLite and the embedded broker), driven through HTTP.

Each stack gets a throwaway PostgreSQL database (tl_it_<random>, dropped after), a Redis database
number of its own (flushed before and after), and a state folder in tmp. Process output goes to files
in that folder and is printed when a test fails. Heartbeats are fast (0.5 s, stale after 3 s) so
recovery can be watched in seconds.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
_REDIS_DBS = iter(range(15, 7, -1))  # one per stack; 0..7 left to people running things by hand

QUICK = {"epochs": 2, "batch_size": 32}
SMALL = {"image_size": 32}
TERMINAL = {"succeeded", "failed", "cancelled"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


_FAILED: set[str] = set()  # node ids of failed integration tests (their stacks' logs get printed)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    report = yield
    if report.failed:
        _FAILED.add(item.nodeid)
    return report


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def pretrain_body(epochs: int = 2, **data: Any) -> dict:
    return {
        "kind": "pretrain",
        "dataset": "stl10",
        "model": "simple_cnn",
        "hyperparameters": {**QUICK, "epochs": epochs},
        "data": {**SMALL, **data},
    }


def finetune_body(source: str, strategy: str, epochs: int = 2) -> dict:
    return {
        "kind": "finetune",
        "source": source,
        "dataset": "mnist",
        "strategy": strategy,
        "hyperparameters": {**QUICK, "epochs": epochs},
        "data": SMALL,
    }


def png_digit() -> bytes:
    """A 28x28 greyscale PNG like the tiny MNIST files: dark, with a bright square."""
    import io

    from PIL import Image

    image = Image.new("L", (28, 28), 20)
    image.paste(255, (7, 3, 14, 10))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _command() -> list[str]:
    script = Path(sys.executable).with_name("transferlab")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


class Stack:
    """One deployment: its settings as environment variables, its processes, an HTTP client."""

    def __init__(self, home: Path, env: dict[str, str]):
        self.home = home
        self.env = env
        self.processes: list[tuple[str, subprocess.Popen, Path]] = []
        self.client: httpx.Client | None = None
        self._count = 0

    # processes ------------------------------------------------------------------------------

    def _spawn(self, name: str, *args: str, settings: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a process with the stack's environment, `settings` (TRANSFERLAB_<NAME>) on top."""
        env = {**self.env, **{f"TRANSFERLAB_{k.upper()}": v for k, v in (settings or {}).items()}}
        self._count += 1
        log = self.home / f"{self._count:02d}-{name}.log"
        out = open(log, "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [*_command(), *args],
            cwd=self.home,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a kill -9 of the test run's group leaves these alone
        )
        out.close()
        self.processes.append((name, process, log))
        return process

    def start_api(
        self, workers: int | None = 0, *, wait: bool = True, settings: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """`transferlab serve` on a free port; workers=None leaves the count to the settings."""
        port = _free_port()
        args = ["serve", "--port", str(port)]
        if workers is not None:
            args += ["--workers", str(workers)]
        process = self._spawn("serve", *args, settings=settings)
        if self.client is not None:
            self.client.close()
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        if wait:
            self.wait_api(process)
        return process

    def wait_api(self, process: subprocess.Popen, timeout: float = 120) -> None:
        def ready() -> bool:
            try:
                return self.client.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        self._wait_until(process, "serve", ready, timeout)

    def start_workers(self, count: int = 1, settings: dict[str, str] | None = None) -> list[subprocess.Popen]:
        """Start `count` worker processes side by side and wait until each is consuming."""
        started = [
            self._spawn("worker", "worker", "--loglevel", "INFO", settings=settings) for _ in range(count)
        ]
        for process in started:
            self.wait_worker(process)
        return started

    def start_worker(self, settings: dict[str, str] | None = None) -> subprocess.Popen:
        return self.start_workers(1, settings)[0]

    def log_of(self, process: subprocess.Popen) -> str:
        return next(log for _, p, log in self.processes if p is process).read_text(errors="replace")

    def wait_worker(self, process: subprocess.Popen, timeout: float = 120) -> None:
        log = next(log for _, p, log in self.processes if p is process)
        self._wait_until(process, "worker", lambda: b" ready." in log.read_bytes(), timeout)

    def _wait_until(self, process, name: str, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}\n{self.logs()}")
            if ready():
                return
            time.sleep(0.2)
        raise AssertionError(f"{name} not ready within {timeout} s\n{self.logs()}")

    def holder(self, job: dict) -> subprocess.Popen:
        """The worker process running `job` (its worker field is host:pid)."""
        pid = int(job["worker"].rsplit(":", 1)[1])
        return next(p for name, p, _ in self.processes if name == "worker" and p.pid == pid)

    @staticmethod
    def kill(process: subprocess.Popen) -> None:
        """kill -9: no shutdown handler runs, the heartbeat just stops."""
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self, process: subprocess.Popen, timeout: float = 30) -> int:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def stop_all(self) -> None:
        for _name, process, _log in reversed(self.processes):
            self.stop(process)
        if self.client is not None:
            self.client.close()
            self.client = None

    def logs(self, tail_bytes: int = 6000) -> str:
        parts = []
        for name, process, log in self.processes:
            text = log.read_bytes()[-tail_bytes:].decode(errors="replace") if log.exists() else ""
            parts.append(f"----- {log.name} ({name}, pid {process.pid}, rc {process.poll()}) -----\n{text}")
        return "\n".join(parts)

    # HTTP -------------------------------------------------------------------------------------

    def submit(self, body: dict) -> str:
        response = self.client.post("/jobs", json=body)
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def job(self, job_id: str) -> dict:
        response = self.client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def metrics(self, job_id: str) -> dict:
        response = self.client.get(f"/jobs/{job_id}/metrics")
        assert response.status_code == 200, response.text
        return response.json()

    def wait(
        self,
        job_id: str,
        until: Callable[[dict], bool] = lambda job: job["status"] in TERMINAL,
        timeout: float = 120,
        every: float = 0.2,
    ) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if until(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job}\n{self.logs()}")
            time.sleep(every)

    def wait_succeeded(self, job_id: str, timeout: float = 120) -> dict:
        job = self.wait(job_id, timeout=timeout)
        assert job["status"] == "succeeded", f"{job}\n{self.logs()}"
        return job


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _base_env(home: Path, data_root: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSFERLAB_")}
    env.update(
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        TRANSFERLAB_HOME=str(home),
        TRANSFERLAB_DATA_DIR=str(data_root),
        TRANSFERLAB_DEVICE="cpu",
        TRANSFERLAB_HEARTBEAT_SECONDS="0.5",
        TRANSFERLAB_RESUME_EVERY_SECONDS="0",  # every epoch: recovery tests resume mid-job
        TRANSFERLAB_STALE_AFTER_SECONDS="3",
    )
    env.update({f"TRANSFERLAB_{k.upper()}": v for k, v in settings.items()})
    return env


# fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for the module's stack, dropped afterwards."""
    if not _reachable("127.0.0.1", 5432):
        pytest.skip("PostgreSQL is not answering on 127.0.0.1:5432 (.ci/run starts it)")
    import psycopg

    name = f"tl_it_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A Redis database number of the module's own, empty before and after."""
    if not _reachable(REDIS_HOST, REDIS_PORT):
        pytest.skip("Redis is not answering on 127.0.0.1:6379 (.ci/run starts it)")
    import redis

    number = next(_REDIS_DBS)
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number)
    client.flushdb()
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{number}"
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(scope="module")
def make_stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_data_root: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Stack]]:
    """Build stacks; every process they started is stopped at the end of the module, and the
    processes' logs are printed if any test of the module failed."""
    stacks: list[Stack] = []

    def make(**settings: str) -> Stack:
        home = tmp_path_factory.mktemp("stack")
        stack = Stack(home, _base_env(home, tiny_data_root, **settings))
        stacks.append(stack)
        return stack

    yield make
    failed = any(nodeid.startswith(request.node.nodeid) for nodeid in _FAILED)
    for stack in stacks:
        stack.stop_all()
        if failed:
            print(f"\n===== logs of the stack in {stack.home} =====\n{stack.logs()}")


@pytest.fixture
def fresh_workers(request: pytest.FixtureRequest):
    """Stop, at the end of the test, the workers it started through `track`."""
    started: list[tuple[Stack, subprocess.Popen]] = []

    def track(stack: Stack, process: subprocess.Popen) -> subprocess.Popen:
        started.append((stack, process))
        return process

    yield track
    if request.node.nodeid in _FAILED:
        for stack in {id(s): s for s, _ in started}.values():
            print(f"\n===== logs of the stack in {stack.home} =====\n{stack.logs()}")
    for stack, process in started:
        stack.stop(process)
