"""The `transferlab` command.

    transferlab serve --port 8000          # migrate, start the embedded workers, run the API
    transferlab worker --device cuda:0     # one Celery worker process per GPU (distributed)
    transferlab migrate                    # upgrade the database to the newest Alembic revision
    transferlab gc --dry-run               # what resume states and orphan files would be removed

Settings come from TRANSFERLAB_* environment variables (core/settings.py). This is the composition
root: the one place that wires service/ (the API) and worker/ (Celery) together. Imports are lazy so
that `--help` answers without loading Celery, FastAPI or torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys

log = logging.getLogger("transferlab")

WORKER_STOP_SECONDS = 30.0  # a worker hands its job back at the next batch; then it is killed


def _settings():
    from core.settings import get_settings

    return get_settings()


def cmd_migrate(args: argparse.Namespace) -> int:
    from core.migrate import DataLossRefused, downgrade, upgrade

    url = _redacted(_settings().sqlalchemy_url)
    if args.downgrade is None:
        upgrade()
        print(f"database at {url} is up to date")
        return 0
    try:
        downgrade(None, args.downgrade, drop_all_data=args.drop_all_data)
    except DataLossRefused as e:
        print(f"transferlab migrate: {e}", file=sys.stderr)
        return 2
    print(f"database at {url} is at revision {args.downgrade}")
    return 0


LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


def exposure_problem(host: str, token: str | None, insecure: bool) -> str | None:
    """Why `serve --host HOST` must not start, or None: beyond loopback it needs a token."""
    loopback = host in LOOPBACK_HOSTS or host.startswith("127.")
    if loopback or token or insecure:
        return None
    return (
        f"refusing to listen on {host} without TRANSFERLAB_API_TOKEN: anyone who can reach it could queue "
        "training, download every model and use /predict. Set TRANSFERLAB_API_TOKEN (make one with: "
        'python3 -c "import secrets; print(secrets.token_urlsafe(32))"), listen on 127.0.0.1, or opt out '
        "with --insecure-no-token (TRANSFERLAB_INSECURE_NO_TOKEN=true)"
    )


def cmd_worker(args: argparse.Namespace) -> int:
    if args.device:
        os.environ["TRANSFERLAB_DEVICE"] = args.device
    from core.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    from engine.device import resolve_device
    from engine.errors import SpecError

    try:  # refuse to start rather than claim jobs and fail every one of them
        resolve_device(settings.device)
    except SpecError as e:
        print(f"transferlab worker: {e}", file=sys.stderr)
        return 2
    from core.queue import QUEUE
    from worker.celery_app import celery_app

    pool = "solo" if args.concurrency == 1 else "prefork"
    argv = [
        "worker",
        f"--pool={pool}",
        f"--concurrency={args.concurrency}",
        f"--loglevel={args.loglevel}",
        f"--queues={QUEUE}",
        f"--hostname=transferlab-{settings.device.replace(':', '')}-{os.getpid()}@%h",
        "--without-gossip",  # workers share nothing but the queue and the database
        "--without-mingle",
    ]
    celery_app.worker_main(argv)
    return 0


def _worker_preexec() -> None:  # pragma: no cover - runs in the child
    # Linux: a worker whose `serve` parent dies (even by kill -9) gets SIGTERM instead of lingering.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_workers(count: int) -> list[subprocess.Popen]:
    command = [sys.executable, "-m", "cli", "worker"]
    return [
        subprocess.Popen(command, env=os.environ.copy(), preexec_fn=_worker_preexec) for _ in range(count)
    ]


def stop_workers(workers: list[subprocess.Popen], timeout_seconds: float = WORKER_STOP_SECONDS) -> None:
    """SIGTERM (a warm shutdown: the running job goes back to the queue), then SIGKILL."""
    for process in workers:
        if process.poll() is None:
            process.terminate()
    for process in workers:
        try:
            process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            log.warning("worker %d did not stop in %g s; killing it", process.pid, timeout_seconds)
            process.kill()
            process.wait()


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from core.db import get_sessionmaker
    from core.migrate import upgrade
    from core.queue import check_broker, enqueue_run_job
    from service.openmp import tune_openmp_for_serving
    from worker.reaper import start_reaper

    settings = _settings()
    problem = exposure_problem(
        args.host, settings.api_token, args.insecure_no_token or settings.insecure_no_token
    )
    if problem:
        print(f"transferlab serve: {problem}", file=sys.stderr)
        return 2
    if not settings.api_token and args.host not in LOOPBACK_HOSTS and not args.host.startswith("127."):
        log.warning("listening on %s WITHOUT an API token (--insecure-no-token)", args.host)
    upgrade()
    if settings.is_embedded_broker:
        check_broker()  # creates its tables now, before several processes race to
    else:
        try:
            check_broker()
        except Exception as e:  # serve reads anyway; /readyz says 503 until the broker is back
            log.warning("broker %s unreachable: %s", _redacted(settings.celery_broker_url), e)
    count = args.workers
    if count is None:
        count = settings.embedded_workers if settings.is_embedded_broker else 0
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler it
    # found: make that handler unwind through `finally`, so the workers are stopped too.
    signal.signal(signal.SIGTERM, _raise_shutdown)
    signal.signal(signal.SIGINT, _raise_shutdown)
    workers: list[subprocess.Popen] = []
    stop_reaper = None
    try:
        workers = start_workers(count)
        if count:
            log.info("started %d worker process(es): %s", count, [p.pid for p in workers])
        tune_openmp_for_serving()  # after the workers started: they keep OpenMP's defaults
        stop_reaper = start_reaper(settings, get_sessionmaker(), enqueue_run_job)
        print_addresses(args.host, args.port)
        # log_config=None: uvicorn's lines go through our handler (TRANSFERLAB_LOG_FORMAT) too.
        uvicorn.run(
            "service.main:app",
            host=args.host,
            port=args.port,
            log_level=args.loglevel.lower(),
            log_config=None,
        )
    except _Shutdown:
        pass
    finally:
        if stop_reaper is not None:
            stop_reaper.set()
        stop_workers(workers)
    return 0


def print_addresses(host: str, port: int) -> None:
    """Where to go once it listens: the API, its docs, the dashboard, the probes and the metrics."""
    shown = f"[{host}]" if ":" in host else ("127.0.0.1" if host in ("0.0.0.0", "") else host)
    base = f"http://{shown}:{port}"
    print(
        f"transferlab: API {base}  docs {base}/docs  dashboard {base}/ui  "
        f"health {base}/healthz {base}/readyz  metrics {base}/metrics",
        flush=True,
    )


def cmd_gc(args: argparse.Namespace) -> int:
    from core.db import get_sessionmaker
    from core.deletion import collect_garbage

    settings = _settings()
    with get_sessionmaker()() as session:
        report = collect_garbage(
            session, settings, min_age_seconds=args.min_age_seconds, dry_run=args.dry_run
        )
    verb = "would remove" if args.dry_run else "removed"
    for path in report.removed:
        print(f"{verb} {path}")
    print(f"transferlab gc: {verb} {len(report.removed)} item(s), {report.bytes_freed} bytes")
    return 0


class _Shutdown(Exception):
    pass


def _raise_shutdown(_signum, _frame) -> None:
    raise _Shutdown


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transferlab",
        description="Transfer-learning experiments as a REST service: pre-train, fine-tune, predict.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API (and, embedded, its workers)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes to start beside the API; default TRANSFERLAB_EMBEDDED_WORKERS "
        "with the embedded broker, 0 with Redis (run `transferlab worker` per GPU instead)",
    )
    serve.add_argument("--loglevel", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.add_argument(
        "--insecure-no-token",
        action="store_true",
        help="listen beyond loopback without TRANSFERLAB_API_TOKEN (insecure: anyone who reaches it can "
        "train and download models)",
    )
    serve.set_defaults(func=cmd_serve)

    worker = commands.add_parser("worker", help="run a Celery worker that trains jobs")
    worker.add_argument(
        "--device",
        default=None,
        help="auto, cpu, cuda or cuda:N (sets TRANSFERLAB_DEVICE; one worker per GPU)",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="jobs at once (default 1: one process per GPU; more uses a process pool)",
    )
    worker.add_argument("--loglevel", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    worker.set_defaults(func=cmd_worker)

    migrate = commands.add_parser("migrate", help="upgrade the database to the newest revision")
    migrate.add_argument("--downgrade", metavar="REV", help="step back to revision REV instead (e.g. 0003)")
    migrate.add_argument(
        "--drop-all-data", action="store_true", help="allow --downgrade base, which drops every table"
    )
    migrate.set_defaults(func=cmd_migrate)

    gc = commands.add_parser(
        "gc",
        help="remove the resume states of ended jobs and files no row points to (checkpoints, plots, logs)",
    )
    gc.add_argument(
        "--min-age-seconds",
        type=float,
        default=3600.0,
        help="leave anything changed more recently than this alone (a job being written; default 3600)",
    )
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    gc.set_defaults(func=cmd_gc)

    # Listed here for --help; its own parser (service/experiment_cli.py) reads its arguments.
    commands.add_parser(
        "experiment",
        help="submit the seed's study to a running API and follow it (--preset seed|quick|smoke)",
        add_help=False,
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "experiment":  # an HTTP client: no server-side imports or logging set-up
        from cli.experiment_client import main as experiment_main

        return experiment_main(argv[1:])
    args = build_parser().parse_args(argv)
    from core.logs import configure_logging

    # TRANSFERLAB_LOG_FORMAT for this process and what it starts (the workers read the same setting).
    configure_logging(getattr(args, "loglevel", "INFO"), _settings().log_format)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
