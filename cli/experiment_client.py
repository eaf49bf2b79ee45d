"""`transferlab experiment`: submit the seed's study to a running service, watch it, print the table.

    transferlab serve &                                   # the service (embedded: SQLite + a worker)
    transferlab experiment --preset quick                 # minutes on a laptop CPU
    transferlab experiment --preset seed --url http://gpu-box:8000 --out results/
    transferlab experiment --preset smoke --print-request # the JSON body, nothing sent

A client of the HTTP API only (httpx): the server is --url, else $TRANSFERLAB_URL, else
http://127.0.0.1:8000; a token comes from --token or $TRANSFERLAB_API_TOKEN. Ctrl-C stops watching,
not the experiment. Exit status: 0 succeeded, 1 failed or cancelled, 2 refused, 3 timed out.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import httpx

from core.experiments.presets import PRESETS
from core.experiments.table import CLI_STYLE, comparison_cells, pct, points

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = {"succeeded", "failed", "cancelled"}


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    body = copy.deepcopy(PRESETS[args.preset])
    if args.name:
        body["name"] = args.name
    if args.pretrained_job:
        body.pop("pretrain", None)
        body["pretrained_job"] = args.pretrained_job
    if args.strategies:
        body["strategies"] = [s.strip() for s in args.strategies.split(",") if s.strip()]
        if "partial" not in body["strategies"]:
            body.pop("frozen_blocks", None)
    if args.no_controls:
        body["controls"] = False
    return body


# ---------------------------------------------------------------- output


def comparison_table(comparison: dict[str, Any]) -> str:
    """The comparison as aligned text columns (the report's table, narrower: units in the headers)."""
    header, cells = comparison_cells(comparison["rows"], CLI_STYLE)
    lines = [header, *cells]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def best_sentence(comparison: dict[str, Any]) -> str:
    best = comparison.get("best")
    if not best:
        return "No fine-tune succeeded: there is no best strategy."
    selection, test = (pct(best[k], CLI_STYLE.missing) for k in ("selection_value", "test_accuracy"))
    text = f"Best strategy by {best['measure']}: {best['variant']} ({selection}); test accuracy {test}"
    if best.get("transfer_gain") is not None:
        text += f", {points(best['transfer_gain'])} over its control"
    return text + "."


class Progress:
    """One bar per job. On a terminal the block is redrawn in place; otherwise a line is printed
    when a job's status or epoch changes."""

    def __init__(self, out: TextIO, width: int = 24):
        self.out = out
        self.width = width
        self.tty = out.isatty()
        self.drawn = 0
        self.seen: dict[str, tuple[str, int]] = {}

    @staticmethod
    def label(job: dict[str, Any]) -> str:
        if job["role"] == "pretrain":
            return "pretrain"
        what = (job["variant"] or job["role"]) + (" ctrl" if job["role"] == "control" else "")
        return f"{what} {job['optimizer']} lr={job['lr']:g} bs={job['batch_size']}"

    def bar(self, job: dict[str, Any], note: str) -> str:
        done = 1.0 if job["status"] == "succeeded" else job["progress"]
        filled = round(self.width * done)
        bar = "#" * filled + "-" * (self.width - filled)
        epoch = f"ep {job['current_epoch']:<3}"
        return f"{self.label(job):<38.38} [{bar}] {100 * done:5.1f}% {epoch} {job['status']}{note}"

    def update(self, experiment: dict[str, Any], notes: dict[str, str]) -> None:
        jobs = experiment["jobs"]
        head = f"experiment {experiment['id']} {experiment['status']} {100 * experiment['progress']:.0f}%"
        if self.tty:
            lines = [head] + [self.bar(j, notes.get(j["id"], "")) for j in jobs]
            if self.drawn:
                self.out.write(f"\x1b[{self.drawn}F")  # up to the first line of the last drawing
            self.out.write("".join(f"\x1b[2K{line}\n" for line in lines))
            self.drawn = len(lines)
        else:
            for job in jobs:
                state = (job["status"], job["current_epoch"])
                if self.seen.get(job["id"]) != state:
                    self.seen[job["id"]] = state
                    self.out.write(self.bar(job, notes.get(job["id"], "")) + "\n")
        self.out.flush()


# ---------------------------------------------------------------- talking to the service


def _client(args: argparse.Namespace) -> httpx.Client:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    return httpx.Client(base_url=args.url.rstrip("/"), headers=headers, timeout=30)


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        return response.text
    if isinstance(detail, list):  # 422: [{loc, msg}, ...]
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail)
    return str(detail)


def _val_notes(client: httpx.Client, experiment: dict[str, Any], cache: dict[str, tuple[int, str]]) -> dict:
    """The last validation accuracy of each running job, from its metrics (fetched once per epoch)."""
    notes = {}
    for job in experiment["jobs"]:
        if job["status"] not in ("running", "succeeded") or job["current_epoch"] == 0:
            continue
        cached = cache.get(job["id"])
        if cached is None or cached[0] != job["current_epoch"]:
            response = client.get(f"/jobs/{job['id']}/metrics")
            note = ""
            if response.status_code == 200:
                val = [e for e in response.json()["epochs"] if e["phase"] == "val"]
                if val:
                    note = f"  val {100 * val[-1]['accuracy']:.1f}%"
            cached = (job["current_epoch"], note)
            cache[job["id"]] = cached
        notes[job["id"]] = cached[1]
    return notes


def watch(client: httpx.Client, experiment_id: str, args: argparse.Namespace, out: TextIO) -> dict:
    progress = Progress(out)
    cache: dict[str, tuple[int, str]] = {}
    deadline = time.monotonic() + args.timeout if args.timeout else None
    while True:
        response = client.get(f"/experiments/{experiment_id}")
        response.raise_for_status()
        experiment = response.json()
        progress.update(experiment, _val_notes(client, experiment, cache))
        if experiment["status"] in TERMINAL:
            return experiment
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(
                f"experiment {experiment_id} still {experiment['status']} after {args.timeout} s"
            )
        time.sleep(args.poll)


def _save_reports(client: httpx.Client, experiment_id: str, folder: Path, out: TextIO) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for fmt, name in (("markdown", "report.md"), ("html", "report.html")):
        response = client.get(f"/experiments/{experiment_id}/report", params={"format": fmt})
        response.raise_for_status()
        (folder / name).write_text(response.text)
    for owner in (f"/experiments/{experiment_id}",):
        listing = client.get(f"{owner}/artifacts").json()
        for artifact in listing["data"]:
            (folder / artifact["name"]).write_bytes(client.get(artifact["url"]).content)
    out.write(f"saved report.md, report.html and the experiment's plots in {folder}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transferlab experiment",
        description="Submit the seed's study (pre-train, strategies, sweep, controls) and watch it.",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("TRANSFERLAB_URL") or DEFAULT_URL,
        help=f"the service (default $TRANSFERLAB_URL or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token", default=os.environ.get("TRANSFERLAB_API_TOKEN"), help="API token ($TRANSFERLAB_API_TOKEN)"
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="quick",
        help="seed: resnet18 at 96x96, full data, the seed's sweep (GPU); quick: simple_cnn at 32x32, "
        "minutes on a CPU (default); study: all of MNIST, 3 seeds, baselines, layer probes and the "
        "transferability curve (16 min on 2 CPU cores); smoke, study-smoke: for tests",
    )
    parser.add_argument("--name", help="the experiment's name (default: the preset's)")
    parser.add_argument("--pretrained-job", help="reuse this succeeded pretrain job instead of pre-training")
    parser.add_argument("--strategies", help="comma-separated, e.g. linear,partial,full,lp_ft")
    parser.add_argument("--no-controls", action="store_true", help="skip the random-init controls")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between progress reads (default 2)")
    parser.add_argument(
        "--timeout", type=float, default=None, help="give up watching after this many seconds"
    )
    parser.add_argument("--no-wait", action="store_true", help="submit, print the id and return")
    parser.add_argument("--out", type=Path, help="save report.md, report.html and the plots in this folder")
    parser.add_argument("--print-request", action="store_true", help="print the request body; send nothing")
    return parser


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = out or sys.stdout
    body = build_request(args)
    if args.print_request:
        out.write(json.dumps(body, indent=2) + "\n")
        return 0
    started = time.monotonic()
    try:
        with _client(args) as client:
            response = client.post("/experiments", json=body)
            if response.status_code != 202:
                out.write(f"refused ({response.status_code}): {_detail(response)}\n")
                return 2
            experiment = response.json()
            experiment_id = experiment["id"]
            out.write(f"experiment {experiment_id}: {len(experiment['jobs'])} job(s) queued at {args.url}\n")
            if args.no_wait:
                out.write(f"follow it at {args.url}/experiments/{experiment_id}\n")
                return 0
            try:
                experiment = watch(client, experiment_id, args, out)
            except KeyboardInterrupt:
                out.write(
                    f"\nstopped watching; the experiment goes on. Follow {args.url}/experiments/"
                    f"{experiment_id}, cancel with POST {args.url}/experiments/{experiment_id}/cancel\n"
                )
                return 130
            except TimeoutError as exc:
                out.write(f"{exc}\n")
                return 3
            out.write(
                f"\nexperiment {experiment_id} {experiment['status']} in {time.monotonic() - started:.0f} s"
            )
            out.write(f" ({experiment['error']})\n" if experiment.get("error") else "\n")
            comparison = experiment.get("comparison")
            if comparison:
                out.write("\n" + comparison_table(comparison) + "\n\n" + best_sentence(comparison) + "\n")
            report = f"{args.url}/experiments/{experiment_id}/report"
            out.write(f"report: {report} (Markdown), {report}?format=html (plots embedded)\n")
            if args.out is not None:
                _save_reports(client, experiment_id, args.out, out)
    except httpx.HTTPError as exc:
        out.write(f"cannot talk to the service at {args.url}: {exc}\n")
        return 2
    return 0 if experiment["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
