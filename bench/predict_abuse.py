"""POST /predict under abuse: the API process's peak memory and CPU for the worst requests a client may send.

    python -m bench.predict_abuse                              # vgg11_bn at 512 px, 8 at once, 2 rounds
    python -m bench.predict_abuse --large-model resnet18 --rounds 1

It starts `transferlab serve` (no workers, default limits) on a free port with a fresh state folder
holding two checkpoints (random weights): a small-input one (resnet18 at 96 px), so the input-pixel
budget lets a full request of files through to the text checks, and a large-input one (vgg11_bn at 512
px, the reported case). After one request to each (both loaded), the API process's resident memory
is sampled every 5 ms (psutil) while each scenario sends --concurrency requests at once, --rounds
times:
- text bombs: as many PNGs as fit under the body and file limits, each the reported 66 KB file of
  63 zTXt chunks of 1 MiB (63 MiB of text);
- text at the limits: as many PNGs, each with the most text that is still accepted;
- chunk flood: one PNG of empty-keyword zTXt chunks filling the body limit;
- large input: as many 67-byte PNGs as the budget lets through to the large-input checkpoint;
- over the budget: the file limit's worth of them (422 before any is opened);
- largest image: one RGB PNG of TRANSFERLAB_MAX_IMAGE_PIXELS (84 KB for 25 megapixels) per request,
  to the small-input checkpoint (more files would only take longer: they are decoded in turn).
Each row: the statuses, the resident memory at the start and its peak, above idle (idle: after the
warm-up; the allocator keeps some of what a scenario used), the server's CPU seconds per request
(psutil cpu_times of the API process, user + system) and the wall time.
Target (the issue): under 8 concurrent worst-case requests, peak memory < 1 GiB above idle.
The client shares the machine's cores; its CPU is not in the server's figure.
"""

from __future__ import annotations

import argparse
import io
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from PIL import Image

from bench.common import REPO, machine_line, table
from bench.predict_latency import free_port, make_checkpoint

TARGET_BYTES = 2**30
MULTIPART_OVERHEAD = 256  # bytes a file adds to the body beyond its data (boundary, headers)


# --------------------------------------------------------------------------------------------------
# Files


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def _ztxt(key: bytes, size: int) -> bytes:
    return _chunk(b"zTXt", key + b"\0\0" + zlib.compress(b"\0" * size, 9))


def tiny_png(side: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (side, side), 100).save(buffer, format="PNG")
    return buffer.getvalue()


def png_with(chunks: list[bytes]) -> bytes:
    """An 8x8 grey PNG with `chunks` between its header and its image data."""
    plain = tiny_png()
    return plain[:33] + b"".join(chunks) + plain[33:]


def text_bomb(chunks: int = 63) -> bytes:
    """The reported file: `chunks` zTXt chunks of 1 MiB of text each (66 KB for 63)."""
    return png_with([_ztxt(b"k%d" % i, 2**20 - 16) for i in range(chunks)])


def text_at_the_limits() -> bytes:
    """The most text service.uploads accepts: keyed chunks up to MAX_TEXT_MEMORY, the rest of the
    metadata-chunk count as empty-keyword chunks (inflated, then dropped by Pillow) of MAX_TEXT_CHUNK."""
    from PIL import PngImagePlugin

    from service.uploads import MAX_PNG_METADATA_CHUNKS

    size = PngImagePlugin.MAX_TEXT_CHUNK - 64
    keyed = PngImagePlugin.MAX_TEXT_MEMORY // size
    chunks = [_ztxt(b"k%d" % i, size) for i in range(keyed)]
    chunks += [_ztxt(b"", size)] * (MAX_PNG_METADATA_CHUNKS - keyed)
    return png_with(chunks)


def largest_png(pixels: int) -> bytes:
    """An RGB PNG of one colour with about `pixels` pixels: 84 KB for 25 megapixels."""
    side = int(pixels**0.5)
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (7, 8, 9)).save(buffer, format="PNG")
    return buffer.getvalue()


def chunk_flood(total_bytes: int) -> bytes:
    """Empty-keyword zTXt chunks of 64 KiB of text each, filling `total_bytes`."""
    one = _ztxt(b"", 64 * 1024)
    return png_with([one] * max(1, (total_bytes - 200) // len(one)))


# --------------------------------------------------------------------------------------------------
# The server and its measurement


def make_checkpoints(home: Path, small: tuple[str, int], large: tuple[str, int]) -> tuple[str, str]:
    """Two checkpoints in one state folder. make_checkpoint writes to checkpoints/bench, so the first
    is moved aside (its row follows) before the second is made."""
    from core.db import session_scope
    from core.models import Checkpoint

    small_id = make_checkpoint(home, *small)
    (home / "checkpoints" / "bench").rename(home / "checkpoints" / "small")
    with session_scope() as session:
        row = session.get(Checkpoint, small_id)
        assert row is not None
        row.path = "small"
    return small_id, make_checkpoint(home, *large)


class Sampler:
    """Peak RSS of a process, sampled every `interval` seconds in a thread."""

    def __init__(self, process: psutil.Process, interval: float = 0.005):
        self.process = process
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> Sampler:
        self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


@dataclass
class Scenario:
    name: str
    checkpoint: str
    files: list[tuple[str, bytes]]


@dataclass
class Result:
    scenario: Scenario
    statuses: Counter
    start_above_idle: int
    peak_above_idle: int
    cpu_per_request: float
    wall: float
    body_bytes: int


def encode(url: str, scenario: Scenario) -> tuple[bytes, dict[str, str]]:
    request = httpx.Request(
        "POST",
        url,
        data={"checkpoint": scenario.checkpoint},
        files=[("files", (name, data, "image/png")) for name, data in scenario.files],
    )
    body = request.read()
    return body, {"content-type": request.headers["content-type"]}


def run_scenario(
    url: str, process: psutil.Process, idle: int, scenario: Scenario, concurrency: int, rounds: int
) -> Result:
    body, headers = encode(url, scenario)
    statuses: Counter = Counter()

    def send(_: int) -> int:
        with httpx.Client(timeout=600) as client:
            return client.post(url, content=body, headers=headers).status_code

    start = process.memory_info().rss
    cpu_before = cpu_seconds(process)
    started = time.perf_counter()
    with Sampler(process) as sampler, ThreadPoolExecutor(concurrency) as pool:
        for _ in range(rounds):
            statuses.update(pool.map(send, range(concurrency)))
    wall = time.perf_counter() - started
    requests = concurrency * rounds
    cpu = (cpu_seconds(process) - cpu_before) / requests
    return Result(scenario, statuses, start - idle, sampler.peak - idle, cpu, wall, len(body))


def start_server(home: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "TRANSFERLAB_HOME": str(home), "TRANSFERLAB_EMBEDDED_WORKERS": "0"}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--workers", "0",
             "--loglevel", "WARNING"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def wait_healthy(base: str, server: subprocess.Popen, log: Path) -> None:
    for _ in range(600):
        if server.poll() is not None:
            raise SystemExit(f"the server exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not answer /healthz within a minute")


def idle_rss(process: psutil.Process, seconds: float = 1.0) -> int:
    """The largest RSS over `seconds` of quiet (after the warm-up)."""
    with Sampler(process) as sampler:
        time.sleep(seconds)
    return sampler.peak


def scenarios(
    small: str, large: str, large_side: int, text_files: int | None, largest_pixels: int | None
) -> list[Scenario]:
    from core.settings import Settings

    limits = Settings()
    room = limits.max_upload_bytes - 1024

    def fitting(data: bytes) -> int:
        fit = min(limits.max_files_per_request, room // (len(data) + MULTIPART_OVERHEAD))
        return min(fit, text_files) if text_files else fit

    bomb, accepted, tiny = text_bomb(), text_at_the_limits(), tiny_png(1)
    files = limits.max_files_per_request
    within = limits.max_predict_input_pixels // (large_side * large_side)  # files the budget allows
    cases = [
        Scenario("text bombs", small, [(f"bomb{i}.png", bomb) for i in range(fitting(bomb))]),
        Scenario("text at the limits", small, [(f"text{i}.png", accepted) for i in range(fitting(accepted))]),
        Scenario("chunk flood", small, [("flood.png", chunk_flood(room - 2 * MULTIPART_OVERHEAD))]),
        Scenario("large input", large, [(f"tiny{i}.png", tiny) for i in range(min(max(within, 1), files))]),
    ]  # fmt: skip
    if within < files:
        over = [(f"tiny{i}.png", tiny) for i in range(files)]
        cases.append(Scenario("over the budget", large, over))
    largest = [("largest.png", largest_png(largest_pixels or limits.max_image_pixels))]
    cases.append(Scenario("largest image", small, largest))
    return cases


def report(results: list[Result], header: str, concurrency: int) -> bool:
    rows = [
        [
            r.scenario.name,
            len(r.scenario.files),
            round(r.body_bytes / 1024),
            " ".join(f"{code}x{count}" for code, count in sorted(r.statuses.items())),
            round(r.start_above_idle / 2**20),
            round(r.peak_above_idle / 2**20),
            r.cpu_per_request,
            r.wall,
        ]
        for r in results
    ]
    print(header)
    print(table(rows, ("scenario", "files", "body KiB", "statuses", "start MiB", "peak MiB", "CPU s/request",
                       "wall s")))  # fmt: skip
    print("(start, peak: resident memory above idle)")
    worst = max(r.peak_above_idle for r in results)
    verdict = worst < TARGET_BYTES
    print(f"\npeak under {concurrency} concurrent worst-case requests < 1 GiB above idle: "
          f"{'PASS' if verdict else 'FAIL'} ({worst / 2**20:.0f} MiB)")  # fmt: skip
    return verdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small-model", default="resnet18")
    parser.add_argument("--small-size", type=int, default=96)
    parser.add_argument("--large-model", default="vgg11_bn")
    parser.add_argument("--large-size", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=8, help="requests sent at once")
    parser.add_argument("--rounds", type=int, default=2, help="times each scenario sends them")
    parser.add_argument("--text-files", type=int, help="at most this many files in the text scenarios")
    parser.add_argument("--largest-pixels", type=int, help="the largest image's pixels (default: the limit)")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="tl-bench-abuse-"))
    small, large = make_checkpoints(
        home, (args.small_model, args.small_size), (args.large_model, args.large_size)
    )
    port = free_port()
    log = home / "server.log"
    server = start_server(home, port, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, server, log)
        process = psutil.Process(server.pid)
        url = f"{base}/predict"
        warm = _warm_up(url, [small, large])
        idle = idle_rss(process)
        cases = scenarios(small, large, args.large_size, args.text_files, args.largest_pixels)
        results = [run_scenario(url, process, idle, case, args.concurrency, args.rounds) for case in cases]
    finally:
        server.terminate()
        server.wait(timeout=60)
    header = (
        f"# /predict abuse: {args.concurrency} concurrent requests x {args.rounds} rounds; small input "
        f"{args.small_model} {args.small_size} px, large input {args.large_model} {args.large_size} px\n"
        f"# {machine_line('cpu')}; idle RSS {idle / 2**20:.0f} MiB after warm-up (statuses {warm})"
    )
    report(results, header, args.concurrency)
    return 0


def _warm_up(url: str, checkpoints: list[str]) -> list[int]:
    """One request to each checkpoint (loading it), so idle includes the loaded models."""
    with httpx.Client(timeout=600) as client:
        files = {"files": ("w.png", tiny_png(), "image/png")}
        return [client.post(url, data={"checkpoint": c}, files=files).status_code for c in checkpoints]


if __name__ == "__main__":
    sys.exit(main())
