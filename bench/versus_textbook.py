"""Ours against the textbook over a grid: every input size, data size and strategy, whole-process and
training-phase, alternating fresh processes, medians; PASS/FAIL against issue 15's targets.

    python bench/prepare_data.py                         # once: ../shared/data -> .bench-data
    python -m bench.versus_textbook --quick              # one point (32 px, 1,000 images, linear)
    python -m bench.versus_textbook --repeats 3 --out grid.json        # the whole grid: hours on 2 cores

A point is (input size, training images, strategy): resnet18 fine-tuned on MNIST from one source
checkpoint (a quick STL-10 pre-train, made once, or --source). Each repeat runs both sides, each in a
fresh Python process (`python -m bench.common call ...`), the side that goes first alternating
between repeats. Two measures per run, and the medians over repeats:
- whole-process: wall seconds of the child process from its start to its exit, cold: interpreter,
  imports, data, model, training, test evaluation, checkpoint. Ratio = textbook seconds / ours.
- training-phase: images per second over the training epochs with their validation passes (ours also
  its one-off feature precompute and, on a run that calibrates, nothing of the calibration: that is
  counted in whole-process only). Ratio = ours / textbook.

Fairness (what must not flatter us): the textbook (bench/textbook.py: torchvision transforms in a
DataLoader) gets as many DataLoader workers as this process may use cores; nothing of it is changed
here. Ours runs at its defaults: `precision: auto`, calibration within its default budget. Its
calibration cache lives in this benchmark's temporary folder, empty at the start, so the first run
of each point pays the calibration, as a worker's first job of that model and size does;
--no-calibration-cache makes every run pay it. The machine line names the CPU model and its flags.

Targets (issue 15): CPU, every point: ours >= 1.2x the textbook on both measures; linear's
training-phase >= 0.8 x epochs as well. GPU: partial and full >= 5x on both.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, machine_line, prepare_root, resolve_data_root, table

STRATEGIES = ("linear", "partial", "full")
IMAGE_SIZES = (32, 64, 96)
TRAIN_IMAGES = (1000, 2000, 10000)
QUICK_POINT = (32, 1000, "linear")
TARGETS = {"ours": "bench.finetune_throughput:ours_run", "textbook": "bench.textbook:finetune_run"}
CPU_RATIO = 1.2
GPU_RATIO = 5.0
LINEAR_PER_EPOCH = 0.8


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_header() -> str:
    """The CPU's model name and every feature flag the kernel reports (bf16 and AMX decide a lot)."""
    model, flags = "unknown CPU", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif name.strip() == "flags" and not flags:
                    flags = value.strip()
    except OSError:
        pass
    return f"CPU: {model}, {usable_cores()} usable cores\nflags: {flags or 'unknown'}"


def timed_child(target: str, kwargs: dict) -> dict:
    """Run `module:function(**kwargs)` in a fresh process; its result plus the process's wall seconds."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        given, result = Path(tmp) / "in.json", Path(tmp) / "out.json"
        given.write_text(json.dumps(kwargs))
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "bench.common", "call", target, str(given), str(result)],
            cwd=REPO,
            env=env,
            text=True,
            capture_output=True,
        )
        process_seconds = time.perf_counter() - started
        if done.returncode != 0 or not result.is_file():
            raise RuntimeError(f"{target} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        return {**json.loads(result.read_text()), "process_seconds": process_seconds}


def verdict(strategy: str, epochs: int, ours: dict, textbook: dict, gpu: bool) -> dict:
    """The point's two ratios, what they must reach, and PASS/FAIL."""
    whole = textbook["process_seconds"] / max(ours["process_seconds"], 1e-9)
    training = ours["images_per_second"] / max(textbook["images_per_second"], 1e-9)
    if gpu:
        need_whole = need_training = GPU_RATIO if strategy != "linear" else CPU_RATIO
    else:
        need_whole = need_training = CPU_RATIO
    if strategy == "linear":
        need_training = max(need_training, LINEAR_PER_EPOCH * epochs)
    ok = whole >= need_whole and training >= need_training
    return {
        "whole": whole,
        "training": training,
        "need_whole": need_whole,
        "need_training": need_training,
        "result": "PASS" if ok else "FAIL",
    }


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def grid_points(a: argparse.Namespace) -> list[tuple[int, int, str]]:
    if a.quick:
        return [(a.image_sizes[0] if a.image_size_given else QUICK_POINT[0],
                 a.train_images[0] if a.train_images_given else QUICK_POINT[1],
                 a.strategies[0] if a.strategies_given else QUICK_POINT[2])]  # fmt: skip
    grid = itertools.product(a.image_sizes, a.train_images, a.strategies)
    # Cheapest first (pixels times images, linear before the others): what a stopped run leaves is
    # the most points, and the slowest ones come last.
    return sorted(grid, key=lambda p: (p[0] ** 2 * p[1], STRATEGIES.index(p[2])))


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def parse(argv: list[str] | None) -> argparse.Namespace:
    from engine.spec import Hyperparameters

    hp = Hyperparameters()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="one point: 32 px, 1,000 images, linear (or the first given)"
    )
    p.add_argument("--image-sizes", type=_ints, default=list(IMAGE_SIZES))
    p.add_argument("--train-images", type=_ints, default=list(TRAIN_IMAGES), help="before the val hold-out")
    p.add_argument("--strategies", type=lambda t: [s for s in t.split(",") if s], default=list(STRATEGIES))
    p.add_argument("--repeats", type=int, help="runs per side and point (default 3; --quick 1)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=hp.batch_size)
    p.add_argument("--test-samples", type=int, default=1000)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-root")
    p.add_argument("--source", help="an engine resnet18 checkpoint folder (default: pre-train one now)")
    p.add_argument("--pretrain-samples", type=int, default=500)
    p.add_argument("--no-calibration-cache", action="store_true", help="ours calibrates in every run")
    p.add_argument("--out", help="every run and the verdicts as JSON")
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="print the table of earlier --out files (with --out: one file)",
    )
    given = set(argv if argv is not None else sys.argv[1:])
    a = p.parse_args(argv)
    a.image_size_given = "--image-sizes" in given
    a.train_images_given = "--train-images" in given
    a.strategies_given = "--strategies" in given
    a.repeats = a.repeats or (1 if a.quick else 3)
    for s in a.strategies:
        if s not in STRATEGIES:
            p.error(f"--strategies: {s!r} is not one of {', '.join(STRATEGIES)}")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    if a.merge:
        return merge_reports(a.merge, a.out)
    from bench.finetune_throughput import make_source
    from engine.device import resolve_device
    from engine.spec import FinetuneSpec, Hyperparameters
    from engine.strategies import plan_phases

    device = str(resolve_device(a.device))
    gpu = device.startswith("cuda")
    workers = usable_cores()
    root = resolve_data_root(a.data_root)
    prepare_root(root, ["stl10", "mnist"])
    points = grid_points(a)
    print(machine_line(device))
    print(cpu_header())
    print(
        f"resnet18 fine-tuned on MNIST, {a.epochs} epochs, batch {a.batch_size}, val_fraction "
        f"{a.val_fraction}, {a.test_samples} test images; textbook DataLoader workers {workers} (= usable "
        f"cores); ours at its defaults, calibration cache "
        f"{'off' if a.no_calibration_cache else 'per benchmark, empty at start'}; {a.repeats} repeat(s), "
        f"fresh process per run, alternating order; {len(points)} point(s)",
        flush=True,
    )
    runs: dict[tuple[int, int, str, str], list[dict]] = {}
    done: list[tuple[int, int, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-grid-") as tmp:
        source = Path(a.source) if a.source else make_source(
            root, Path(tmp) / "source", "resnet18", 64, 1, a.pretrain_samples, a.batch_size, device
        )  # fmt: skip
        cache = None if a.no_calibration_cache else str(Path(tmp) / "calibration.json")
        lr = Hyperparameters().lr
        # Point by point, cheapest first, the report rewritten after each: a grid that takes hours keeps
        # every point it finished when it is stopped. Within a point the side that goes first alternates.
        for size, images, strategy in points:
            phase = plan_phases(FinetuneSpec(strategy=strategy), "resnet18")[0]
            shared = {
                "data_root": str(root), "source": str(source), "strategy": strategy, "epochs": a.epochs,
                "batch_size": a.batch_size, "lr": lr, "seed": 0, "image_size": size,
                "train_samples": images, "test_samples": a.test_samples, "val_fraction": a.val_fraction,
                "device": device,
            }  # fmt: skip
            kwargs = {
                "ours": {**shared, "calibration_cache": cache},
                "textbook": {**shared, "frozen_blocks": phase.frozen_blocks,
                             "extractor_lr_factor": phase.extractor_lr_factor, "workers": workers},
            }  # fmt: skip
            for r in range(a.repeats):
                order = ("ours", "textbook") if r % 2 == 0 else ("textbook", "ours")
                for side in order:
                    result = timed_child(TARGETS[side], kwargs[side])
                    runs.setdefault((size, images, strategy, side), []).append(result)
                    print(
                        f"  repeat {r + 1} {size:3d}px {images:6d} {strategy:8s} {side:8s} "
                        f"{result['images_per_second']:8.1f} img/s {result['process_seconds']:7.1f} s "
                        f"process  acc {result['test_accuracy']:.4f}  {result.get('numerics', '')}",
                        flush=True,
                    )
            done.append((size, images, strategy))
            if a.out:
                write_report(Path(a.out), a, device, runs, summarise(done, runs, a.epochs, gpu))
    return print_verdicts(summarise(done, runs, a.epochs, gpu), f"{a.repeats} run(s) per side, {device}")


def print_verdicts(verdicts: list[dict], what: str) -> int:
    """The table of medians and verdicts, and the overall PASS/FAIL (the exit status)."""
    rows = [[v["image_size"], v["train_images"], v["strategy"],
             f"{v['ours']['process_seconds']:.1f} / {v['textbook']['process_seconds']:.1f}",
             f"{v['whole']:.2f}x (>= {v['need_whole']:.1f})",
             f"{v['ours']['images_per_second']:.0f} / {v['textbook']['images_per_second']:.0f}",
             f"{v['training']:.2f}x (>= {v['need_training']:.1f})",
             f"{100 * (v['ours']['test_accuracy'] - v['textbook']['test_accuracy']):+.2f}",
             v["result"]] for v in verdicts]  # fmt: skip
    print(f"\nmedians of {what}:")
    header = ("px", "images", "strategy", "process s ours / tb", "whole", "img/s ours / tb", "training",
              "acc ours-tb (pts)", "")  # fmt: skip
    print(table(rows, header))
    passed = sum(v["result"] == "PASS" for v in verdicts)
    all_pass = passed == len(verdicts)
    print(f"\n{'PASS' if all_pass else 'FAIL'}: {passed} of {len(verdicts)} points")
    return 0 if all_pass else 1


def merge_reports(paths: list[str], out: str | None) -> int:
    """Several --out files of one machine (a grid run in parts, or an earlier merge) as one table,
    cheapest point first; a point in a later file replaces the same point of an earlier one (a re-run):
    its verdict and its runs. With `out`, also as one JSON file (each part's arguments kept)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    latest = {
        (v["image_size"], v["train_images"], v["strategy"]): v for part in parts for v in part["verdicts"]
    }
    verdicts = sorted(
        latest.values(),
        key=lambda v: (v["image_size"] ** 2 * v["train_images"], STRATEGIES.index(v["strategy"])),
    )
    print(parts[0]["machine"])
    print(parts[0]["cpu"])
    # An earlier merge is a part too: its own parts (each run's file and arguments) carry over.
    pieces = [
        piece
        for path, part in zip(paths, parts, strict=True)
        for piece in part.get("parts") or [{"file": Path(path).name, "arguments": part["arguments"]}]
    ]
    repeats = sorted({piece["arguments"]["repeats"] for piece in pieces})
    if out:
        merged = {
            "machine": parts[0]["machine"],
            "cpu": parts[0]["cpu"],
            "parts": pieces,
            "runs": {k: v for part in parts for k, v in part["runs"].items()},
            "verdicts": verdicts,
        }
        Path(out).write_text(json.dumps(merged, indent=2))
    return print_verdicts(
        verdicts, f"{' or '.join(map(str, repeats))} run(s) per side, from {len(parts)} file(s)"
    )


def summarise(points: list[tuple[int, int, str]], runs: dict, epochs: int, gpu: bool) -> list[dict]:
    """Each finished point's medians per side and its verdict."""
    verdicts = []
    for size, images, strategy in points:
        med = {side: {k: median_of(runs[(size, images, strategy, side)], k)
                      for k in ("process_seconds", "images_per_second", "test_accuracy")}
               for side in ("ours", "textbook")}  # fmt: skip
        v = verdict(strategy, epochs, med["ours"], med["textbook"], gpu)
        verdicts.append({"image_size": size, "train_images": images, "strategy": strategy, **med, **v})
    return verdicts


def write_report(out: Path, a: argparse.Namespace, device: str, runs: dict, verdicts: list[dict]) -> None:
    report = {
        "machine": machine_line(device),
        "cpu": cpu_header(),
        "arguments": vars(a),
        "runs": {"/".join(map(str, k)): v for k, v in runs.items()},
        "verdicts": verdicts,
    }
    out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
