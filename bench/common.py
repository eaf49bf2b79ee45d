"""What every benchmark shares: the data root, the rows a run uses, one measured run in a fresh
process, medians and the printed table.

A measured run is a dict (`Measurement.to_dict()`): side, what ran, images per second over the
training phase, train and wall seconds, peak memory, test accuracy. Each run gets its own Python
process (`isolated`), so a run's peak memory is its own (CPU: peak resident set size, sampled as
engine.cost.PeakMemory does, in the process that trains) and no cache or allocator state leaks from
one side to the other. Interpreter start and imports are outside every timing.

    python -m bench.common call bench.textbook:finetune_run in.json out.json   # what isolated() runs
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO / ".bench-data"
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


# --------------------------------------------------------------------------------------------------
# Data


def resolve_data_root(given: str | os.PathLike | None) -> Path:
    """--data-root, else TRANSFERLAB_DATA_DIR, else .bench-data in this checkout."""
    root = Path(given or os.environ.get("TRANSFERLAB_DATA_DIR") or DEFAULT_DATA_ROOT).expanduser().resolve()
    if not root.is_dir():
        raise SystemExit(
            f"no data root at {root}: run `python bench/prepare_data.py` (copies ../shared/data to "
            f"{DEFAULT_DATA_ROOT}), or pass --data-root / set TRANSFERLAB_DATA_DIR"
        )
    return root


def unpack_mnist(root: Path) -> None:
    """Leave the decompressed IDX files beside the .gz ones, as torchvision's MNIST(download=True) does:
    torchvision 0.29's MNIST(download=False) reads only the decompressed names. One-time setup."""
    raw = Path(root) / "MNIST" / "raw"
    for name in MNIST_FILES:
        plain, packed = raw / name, raw / f"{name}.gz"
        if plain.is_file() or not packed.is_file():
            continue
        tmp = plain.with_name(plain.name + ".tmp")
        with gzip.open(packed, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, plain)


def prepare_root(root: Path, datasets: Iterable[str]) -> None:
    """One-time work outside every timing: torchvision's unpacked MNIST, and the engine's decoded
    split cache (<root>/.transferlab-cache), which is the engine's design: decode once per data root."""
    from engine.datasets import load_split

    for name in datasets:
        if name == "mnist":
            unpack_mnist(root)
        for split in ("train", "test"):
            load_split(name, split, root)


@dataclass(frozen=True)
class Rows:
    train: list[int]  # indices into the official train split
    val: list[int]
    test: list[int]


def select_rows(
    train_labels,
    test_labels,
    train_samples: int | None,
    test_samples: int | None,
    val_fraction: float,
    seed: int,
) -> Rows:
    """The rows engine.run uses for a spec with these data options (same functions, same seed)."""
    from engine.datasets import stratified_subset, train_val_split

    pool = stratified_subset(train_labels, train_samples, seed)
    train_pos, val_pos = train_val_split(train_labels[pool], val_fraction, seed)
    test = stratified_subset(test_labels, test_samples, seed)
    return Rows(pool[train_pos].tolist(), pool[val_pos].tolist(), test.tolist())


# --------------------------------------------------------------------------------------------------
# Measurements


@dataclass
class Measurement:
    side: str  # ours | textbook
    task: str  # linear | partial | full | pretrain
    device: str
    epochs: int
    train_rows: int  # images per epoch (after the validation hold-out)
    images_per_second: float  # epochs x train_rows / train_seconds
    train_seconds: float  # all epochs, their validation passes, and (ours) any feature precompute
    wall_seconds: float  # the whole call: data, model, training, test evaluation, checkpoint
    peak_memory_bytes: int
    memory_device: str
    test_accuracy: float
    numerics: str = ""  # ours: the calibration's choice and how (e.g. "bf16/channels_last, cached")

    def to_dict(self) -> dict:
        return asdict(self)


def measurement_of(side: str, task: str, result, epochs: int, wall_seconds: float) -> dict:
    """A Measurement from an engine RunResult."""
    seen = sum(m.images_per_second * m.seconds for m in result.epochs if m.phase == "train")
    cost = result.cost
    return Measurement(
        side=side,
        task=task,
        device=result.device,
        epochs=epochs,
        train_rows=round(seen / max(epochs, 1)),
        images_per_second=seen / max(cost.train_seconds, 1e-9),
        train_seconds=cost.train_seconds,
        wall_seconds=wall_seconds,
        peak_memory_bytes=cost.peak_memory_bytes,
        memory_device=cost.memory_device,
        test_accuracy=result.evaluation.accuracy,
        numerics=_numerics_line(cost.numerics),
    ).to_dict()


def _numerics_line(numerics: dict) -> str:
    """A run's calibration in a few words: what it chose and how (measured, cached, skipped and why)."""
    if not numerics.get("chosen"):
        return ""
    from engine.calibrate import Candidate

    return f"{Candidate.from_dict(numerics['chosen']).name}, {numerics.get('how', '')}"


def add_comparison_arguments(p: argparse.ArgumentParser) -> None:
    """The options every ours-vs-textbook benchmark takes; each adds its own sizes and defaults."""
    p.add_argument("--data-root", help="default: $TRANSFERLAB_DATA_DIR, else .bench-data")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--textbook-workers", type=int, help="DataLoader worker processes (default: CPU 2, GPU 8)")
    p.add_argument("--compile", action="store_true", help="ours: torch.compile the forward (experiment)")
    p.add_argument("--cudnn-benchmark", action="store_true", help="ours: torch.backends.cudnn.benchmark")
    p.add_argument(
        "--precision", default="auto", choices=["auto", "fp32", "bf16"], help="ours: its precision"
    )
    p.add_argument("--in-process", action="store_true", help="no fresh process per run (tests; memory mixes)")
    p.add_argument("--out", help="write every run and the summary as JSON here")


def engine_spec_fields(
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    precision: str,
    image_size: int,
    train_samples: int | None,
    test_samples: int | None,
    val_fraction: float,
) -> dict:
    """The `hyperparameters` and `data` of an engine spec, from the keyword arguments every side takes."""
    return {
        "hyperparameters": {
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "precision": precision,
        },
        "data": {
            "image_size": image_size,
            "train_samples": train_samples,
            "test_samples": test_samples,
            "val_fraction": val_fraction,
        },
    }


def measure_engine(spec, task: str, *, data_root: str, device: str, source: str | None = None,
                   compile: bool = False, cudnn_benchmark: bool = False,
                   calibration_cache: str | None = None) -> dict:  # fmt: skip
    """One engine job (engine.run.run_job) in a throw-away folder, measured as `measurement_of` says.
    The numerics are the engine's defaults (its calibration; on CUDA it turns cudnn.benchmark on
    itself), with calibration_cache as the calibration's JSON file when given."""
    import torch

    from engine.run import CalibrationOptions, run_job

    if compile:
        enable_compile()
    torch.backends.cudnn.benchmark = cudnn_benchmark
    with tempfile.TemporaryDirectory(prefix="bench-ours-") as tmp:
        started = time.perf_counter()
        result = run_job(
            spec,
            data_root=Path(data_root),
            workdir=Path(tmp) / "work",
            checkpoint_dir=Path(tmp) / "ckpt",
            source_checkpoint=Path(source) if source else None,
            device=device,
            calibration=CalibrationOptions(cache_path=Path(calibration_cache) if calibration_cache else None),
        )
        wall = time.perf_counter() - started
    return measurement_of("ours", task, result, spec.hyperparameters.epochs, wall)


def isolated(target: str, kwargs: dict, in_process: bool = False) -> dict:
    """Run `module:function(**kwargs)` (which returns a dict) in a fresh Python process."""
    if in_process:
        return _call(target, kwargs)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        given, result = Path(tmp) / "in.json", Path(tmp) / "out.json"
        given.write_text(json.dumps(kwargs))
        cmd = [sys.executable, "-m", "bench.common", "call", target, str(given), str(result)]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        done = subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=True)
        if done.returncode != 0 or not result.is_file():
            raise RuntimeError(
                f"{target} failed (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )
        return json.loads(result.read_text())


def _call(target: str, kwargs: dict) -> dict:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)(**kwargs)


def median_runs(runs: Sequence[dict]) -> dict:
    """One dict: the median of every numeric field over repeats, other fields from the first run."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = statistics.median(r[key] for r in runs)
    out["repeats"] = len(runs)
    return out


def enable_compile(mode: str | None = None) -> None:
    """Experiment: torch.compile the part of the model that trains (bench only).

    The engine has no compile option yet; this wraps engine.run's private _suffix. A head alone (linear)
    and the frozen prefix (run once when its outputs are cached) are left eager: compiling them costs
    more than it saves. If it pays, the engine should grow the option instead."""
    import torch

    import engine.run as run

    suffix = run._suffix

    def compiled_suffix(model, frozen):
        forward = suffix(model, frozen)
        return forward if frozen == len(model.blocks) else torch.compile(forward, mode=mode)

    run._suffix = compiled_suffix


# --------------------------------------------------------------------------------------------------
# Printing


def machine_line(device: str) -> str:
    import torch

    where = f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})"
    if device.startswith("cuda"):
        where = f"{torch.cuda.get_device_name(0)}, {where}"
    today = datetime.date.today().isoformat()
    return f"{today}  torch {torch.__version__}  {where}  threads {torch.get_num_threads()}"


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def measurement_rows(results: Sequence[dict]) -> list[list[object]]:
    return [
        [
            r["task"],
            r["side"],
            r["images_per_second"],
            r["train_seconds"],
            r["wall_seconds"],
            round(r["peak_memory_bytes"] / 2**20),
            f"{100 * r['test_accuracy']:.2f}",
        ]
        for r in results
    ]


MEASUREMENT_HEADER = ("task", "side", "img/s", "train s", "wall s", "peak MiB", "test acc %")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4 or args[0] != "call":
        raise SystemExit("usage: python -m bench.common call module:function in.json out.json")
    _, target, given, result = args
    out = _call(target, json.loads(Path(given).read_text()))
    Path(result).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
