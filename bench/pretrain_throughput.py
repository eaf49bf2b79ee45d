"""Pre-training throughput on STL-10 with the seed's augmentations (random crop, flip, Gaussian blur),
ours (engine.run.run_job) against the textbook pipeline (bench/textbook.py), side by side in one run.

    python bench/prepare_data.py                    # once: ../shared/data -> .bench-data
    python -m bench.pretrain_throughput             # CPU default: resnet18, 2 epochs of 900 images
    python -m bench.pretrain_throughput --device cuda --epochs 10 --textbook-workers 8

The STL-10 files here are the 1,000 + 200 image subset (../shared/data/README.md); 10% of the train
images are held out for validation, as the engine's default does. Ours augments whole batches on the
device; the textbook runs RandomCrop, RandomHorizontalFlip and RandomApply(GaussianBlur) per PIL image
in DataLoader workers. Measured as in bench/finetune_throughput.py (medians of --repeats fresh-process
runs, alternating which side goes first). No target is set for pre-training; the ratio is printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import (
    MEASUREMENT_HEADER,
    add_comparison_arguments,
    engine_spec_fields,
    isolated,
    machine_line,
    measure_engine,
    measurement_rows,
    median_runs,
    prepare_root,
    resolve_data_root,
    table,
)

TARGETS = {"ours": "bench.pretrain_throughput:ours_run", "textbook": "bench.textbook:pretrain_run"}


def ours_run(
    *,
    data_root: str,
    model_name: str,
    device: str,
    compile: bool = False,
    cudnn_benchmark: bool = False,
    precision: str = "auto",
    **sizes,
) -> dict:
    """One engine pre-train job, measured (`sizes`: epochs, batch_size, lr, seed, image_size, ...)."""
    from engine.spec import PretrainSpec

    spec = PretrainSpec(dataset="stl10", model=model_name, **engine_spec_fields(precision=precision, **sizes))
    options = {"compile": compile, "cudnn_benchmark": cudnn_benchmark}
    return measure_engine(spec, "pretrain", data_root=data_root, device=device, **options)


def main(argv: list[str] | None = None) -> dict:
    from engine.device import resolve_device
    from engine.spec import Hyperparameters

    hp = Hyperparameters()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_comparison_arguments(p)
    p.add_argument("--train-samples", type=int, help="STL-10 train images before the val hold-out (all)")
    p.add_argument("--test-samples", type=int, help="STL-10 test images (all)")
    p.add_argument("--epochs", type=int, help="default: CPU 2, GPU 10")
    p.add_argument("--batch-size", type=int, default=hp.batch_size)
    p.add_argument("--lr", type=float, default=hp.lr)
    p.add_argument("--seed", type=int, default=hp.seed)
    p.add_argument("--val-fraction", type=float, default=0.1)
    a = p.parse_args(argv)

    device = str(resolve_device(a.device))
    gpu = device.startswith("cuda")
    epochs = a.epochs or (10 if gpu else 2)
    workers = a.textbook_workers if a.textbook_workers is not None else (8 if gpu else 2)
    root = resolve_data_root(a.data_root)
    prepare_root(root, ["stl10"])
    print(machine_line(device))
    print(
        f"{a.model} pre-training on STL-10 at {a.image_size}x{a.image_size}, augmented: "
        f"train_samples={a.train_samples or 'all'} (val_fraction {a.val_fraction}), "
        f"test_samples={a.test_samples or 'all'}, epochs={epochs}, batch {a.batch_size}, lr {a.lr}, "
        f"seed {a.seed}; textbook DataLoader workers {workers}; repeats {a.repeats}; "
        f"ours precision {a.precision}"
    )
    shared = dict(
        data_root=str(root),
        model_name=a.model,
        epochs=epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        seed=a.seed,
        image_size=a.image_size,
        train_samples=a.train_samples,
        test_samples=a.test_samples,
        val_fraction=a.val_fraction,
        device=device,
    )
    kwargs = {
        "ours": {
            **shared,
            "compile": a.compile,
            "cudnn_benchmark": a.cudnn_benchmark,
            "precision": a.precision,
        },
        "textbook": {**shared, "workers": workers},
    }
    runs: dict[str, list[dict]] = {"ours": [], "textbook": []}
    for r in range(a.repeats):
        for side in ["ours", "textbook"] if r % 2 == 0 else ["textbook", "ours"]:
            result = isolated(TARGETS[side], kwargs[side], a.in_process)
            runs[side].append(result)
            print(
                f"  repeat {r + 1} {side:8s} {result['images_per_second']:8.1f} img/s "
                f"{result['wall_seconds']:7.1f} s wall  acc {result['test_accuracy']:.4f}",
                flush=True,
            )
    medians = [median_runs(runs["ours"]), median_runs(runs["textbook"])]
    speed = medians[0]["images_per_second"] / max(medians[1]["images_per_second"], 1e-9)
    wall = medians[1]["wall_seconds"] / max(medians[0]["wall_seconds"], 1e-9)
    print(f"\nmedians of {a.repeats} run(s) each, {device}:")
    print(table(measurement_rows(medians), MEASUREMENT_HEADER))
    print(f"\nimg/s ours/textbook {speed:.2f}x, wall textbook/ours {wall:.2f}x")
    report = {
        "device": device,
        "machine": machine_line(device),
        "arguments": vars(a),
        "runs": runs["ours"] + runs["textbook"],
        "medians": medians,
        "speed_ratio": speed,
        "wall_ratio": wall,
    }
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
