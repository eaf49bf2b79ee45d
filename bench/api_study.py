"""The seed study end to end through the API with one worker: wall time, and how much of it is not
training (queueing, data loading, persistence, evaluation, checkpointing).

    python -m bench.api_study                          # CPU scale: simple_cnn, 32x32, MNIST subset
    python -m bench.api_study --model resnet18 --image-size 96 --train-samples 0   # the seed's scale

Starts `transferlab serve` (embedded: SQLite, the SQLite broker, one worker) on a free port in a fresh
state folder, posts the pre-train, waits, posts the linear / partial / full fine-tunes at once, and
waits for them. Training time is each job's cost.train_seconds (feature caching and validation
included); evaluation is cost.eval_seconds; everything else in the wall time is overhead.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import resolve_data_root
from bench.predict_latency import free_port

REPO = Path(__file__).resolve().parents[1]
TERMINAL = ("succeeded", "failed", "cancelled")


def seconds_between(start: str, end: str) -> float:
    """Seconds between two of the API's ISO-8601 timestamps."""
    parse = datetime.datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def wait(client: httpx.Client, job_ids: list[str]) -> list[dict]:
    while True:
        jobs = [client.get(f"/jobs/{j}").json() for j in job_ids]
        if all(job["status"] in TERMINAL for job in jobs):
            failed = [job for job in jobs if job["status"] != "succeeded"]
            if failed:
                raise SystemExit(f"job {failed[0]['id']} {failed[0]['status']}: {failed[0]['error']}")
            return jobs
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="simple_cnn")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2, help="fine-tune epochs")
    parser.add_argument("--train-samples", type=int, default=10_000, help="MNIST cap; 0 = all 60,000")
    parser.add_argument("--test-samples", type=int, default=2_000, help="MNIST cap; 0 = all 10,000")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="tl-bench-study-"))
    port = free_port()
    env = {**os.environ, "TRANSFERLAB_HOME": str(home), "TRANSFERLAB_DEVICE": args.device,
           "TRANSFERLAB_DATA_DIR": str(resolve_data_root(args.data_root))}  # fmt: skip
    log = open(home / "serve.log", "w")  # noqa: SIM115 (lives as long as the server)
    server = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--workers", "1"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    data = {"image_size": args.image_size}
    caps = {"train_samples": args.train_samples or None, "test_samples": args.test_samples or None}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for _ in range(600):
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            started = time.perf_counter()
            pretrain = client.post("/jobs", json={
                "kind": "pretrain", "dataset": "stl10", "model": args.model,
                "hyperparameters": {"epochs": args.pretrain_epochs}, "data": data,
            }).raise_for_status().json()["id"]  # fmt: skip
            jobs = wait(client, [pretrain])
            finetunes = [
                client.post(
                    "/jobs",
                    json={
                        "kind": "finetune",
                        "source": pretrain,
                        "dataset": "mnist",
                        "strategy": strategy,
                        "hyperparameters": {"epochs": args.epochs},
                        "data": {**data, **caps},
                    },
                )
                .raise_for_status()
                .json()["id"]  # fmt: skip
                for strategy in ("linear", "partial", "full")
            ]
            jobs += wait(client, finetunes)
            wall = time.perf_counter() - started
            metrics = [client.get(f"/jobs/{job['id']}/metrics").json() for job in jobs]
    finally:
        server.terminate()
        server.wait(timeout=60)

    train = sum(m["cost"]["train_seconds"] for m in metrics)
    evaluate = sum(m["cost"]["eval_seconds"] for m in metrics)
    print(f"# seed study through the API, one worker, {args.model} at {args.image_size}x{args.image_size}, "
          f"MNIST caps {caps}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")  # fmt: skip
    # Per job: queued = created -> a worker started it; in the worker, what is neither training nor
    # evaluation is loading data and the model, writing the checkpoint, rows and plots.
    print("| job | device | test accuracy | train s | eval s | queued s | rest in worker s |")
    print("|---|---|---|---|---|---|---|")
    for job, m in zip(jobs, metrics, strict=True):
        name = job["spec"].get("strategy") or "pretrain"
        cost = m["cost"]
        queued = seconds_between(job["created_at"], job["started_at"])
        in_worker = seconds_between(job["started_at"], job["finished_at"])
        rest = in_worker - cost["train_seconds"] - cost["eval_seconds"]
        row = f"| {name} | {job['device']} | {m['evaluation']['accuracy']:.4f} |"
        print(f"{row} {cost['train_seconds']:.1f} | {cost['eval_seconds']:.2f} | {queued:.2f} | {rest:.2f} |")
    other = wall - train - evaluate
    print(f"\nwall {wall:.1f} s = training {train:.1f} s + evaluation {evaluate:.1f} s "
          f"+ everything else {other:.1f} s ({other / wall:.0%} of the wall time)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
