"""The seed study end to end, driving the engine directly (no service, no queue): pre-train on STL-10,
then fine-tune linear, partial and full on MNIST, each with its test evaluation and checkpoint.

    python -m bench.seed_study --device cuda --feature-cache-gb 16 --out seed.json   # the H200 target
    python -m bench.seed_study --device cpu --model simple_cnn --image-size 16 \\
        --train-samples 200 --test-samples 100 --pretrain-epochs 1 --epochs 1,1,1   # a CPU smoke run

Target (issue 5, one H200, resnet18, 96x96, all of MNIST, the STL-10 subset in ../shared/data): the
whole study under 60 s wall, full fine-tune test accuracy >= 99.5%. The wall clock starts before the
data is decoded (no warm cache in this process) and stops after the last checkpoint is written; CUDA
start-up is inside it. Printed per job: wall, train and eval seconds, test accuracy; and the share of
the total that is not training (data, model set-up, evaluation, checkpoints).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.common import enable_compile, machine_line, resolve_data_root, table

TARGET_WALL_SECONDS = 60.0
TARGET_FULL_ACCURACY = 0.995


def run_study(
    *,
    data_root: Path,
    workdir: Path,
    device: str,
    model: str,
    image_size: int,
    batch_size: int,
    lr: float,
    seed: int,
    pretrain_epochs: int,
    epochs: dict[str, int],
    extractor_lr_factor: float,
    train_samples: int | None,
    test_samples: int | None,
    val_fraction: float,
    feature_cache_bytes: int | None,
    precision: str = "auto",
) -> dict:
    import engine.run as run
    from engine.spec import FinetuneSpec, PretrainSpec

    cache = run.DEFAULT_FEATURE_CACHE_BYTES if feature_cache_bytes is None else feature_cache_bytes
    data = {"image_size": image_size, "val_fraction": val_fraction}
    jobs = []
    started = time.perf_counter()

    def job(name: str, spec, source=None):
        t0 = time.perf_counter()
        result = run.run_job(
            spec,
            data_root=data_root,
            workdir=workdir / name / "work",
            checkpoint_dir=workdir / name / "ckpt",
            source_checkpoint=source,
            device=device,
            feature_cache_bytes=cache,
        )
        wall = time.perf_counter() - t0
        jobs.append(
            {
                "job": name,
                "wall_seconds": wall,
                "train_seconds": result.cost.train_seconds,
                "eval_seconds": result.cost.eval_seconds,
                "test_accuracy": result.evaluation.accuracy,
                "peak_memory_bytes": result.cost.peak_memory_bytes,
                "device": result.device,
                "precision": result.precision,
            }
        )
        print(f"  {name:8s} {wall:6.1f} s  test accuracy {result.evaluation.accuracy:.4f}", flush=True)
        return result

    hyper = {"batch_size": batch_size, "lr": lr, "seed": seed, "precision": precision}
    source = job(
        "pretrain",
        PretrainSpec(
            dataset="stl10", model=model, hyperparameters={**hyper, "epochs": pretrain_epochs}, data=data
        ),
    ).checkpoint.directory
    for strategy in ("linear", "partial", "full"):
        spec = FinetuneSpec(
            dataset="mnist",
            strategy=strategy,
            hyperparameters={**hyper, "epochs": epochs[strategy], "extractor_lr_factor": extractor_lr_factor},
            data={**data, "train_samples": train_samples, "test_samples": test_samples},
        )
        job(strategy, spec, source)
    total = time.perf_counter() - started
    training = sum(j["train_seconds"] for j in jobs)
    full = next(j for j in jobs if j["job"] == "full")["test_accuracy"]
    return {
        "jobs": jobs,
        "wall_seconds": total,
        "train_seconds": training,
        "not_training_share": 1 - training / max(total, 1e-9),
        "full_test_accuracy": full,
        "wall_pass": total < TARGET_WALL_SECONDS,
        "accuracy_pass": full >= TARGET_FULL_ACCURACY,
    }


def main(argv: list[str] | None = None) -> dict:
    from engine.device import resolve_device
    from engine.spec import Hyperparameters

    hp = Hyperparameters()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", help="default: $TRANSFERLAB_DATA_DIR, else .bench-data")
    p.add_argument("--device", default="auto")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=hp.batch_size)
    p.add_argument("--lr", type=float, default=hp.lr)
    p.add_argument("--extractor-lr-factor", type=float, default=hp.extractor_lr_factor)
    p.add_argument("--seed", type=int, default=hp.seed)
    p.add_argument("--pretrain-epochs", type=int, default=20, help="on the 900 STL-10 training images")
    p.add_argument("--epochs", default="2,2,4", help="linear,partial,full fine-tune epochs")
    p.add_argument("--train-samples", type=int, help="MNIST train images (default all)")
    p.add_argument("--test-samples", type=int, help="MNIST test images (default all)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--feature-cache-gb", type=float, help="engine's cap on cached frozen-prefix outputs")
    p.add_argument("--compile", action="store_true", help="torch.compile the engine's forward (experiment)")
    p.add_argument("--cudnn-benchmark", action="store_true")
    p.add_argument(
        "--precision", default="auto", choices=["auto", "fp32", "bf16"], help="hyperparameters.precision"
    )
    p.add_argument("--out", help="write the result as JSON here")
    a = p.parse_args(argv)

    import torch

    counts = [int(v) for v in a.epochs.split(",")]
    if len(counts) != 3:
        p.error("--epochs takes three counts: linear,partial,full")
    device = str(resolve_device(a.device))
    if a.compile:
        enable_compile()
    torch.backends.cudnn.benchmark = a.cudnn_benchmark
    root = resolve_data_root(a.data_root)
    print(machine_line(device))
    print(
        f"seed study: {a.model} at {a.image_size}x{a.image_size}, pre-train {a.pretrain_epochs} epochs on "
        f"STL-10, fine-tune epochs linear/partial/full {a.epochs} on MNIST "
        f"(train_samples {a.train_samples or 'all'}, test_samples {a.test_samples or 'all'}), "
        f"batch {a.batch_size}, lr {a.lr}, precision {a.precision}{', compiled' if a.compile else ''}"
    )
    with tempfile.TemporaryDirectory(prefix="seed-study-") as tmp:
        result = run_study(
            data_root=root,
            workdir=Path(tmp),
            device=device,
            model=a.model,
            image_size=a.image_size,
            batch_size=a.batch_size,
            lr=a.lr,
            seed=a.seed,
            pretrain_epochs=a.pretrain_epochs,
            epochs=dict(zip(("linear", "partial", "full"), counts, strict=True)),
            extractor_lr_factor=a.extractor_lr_factor,
            train_samples=a.train_samples,
            test_samples=a.test_samples,
            val_fraction=a.val_fraction,
            feature_cache_bytes=None if a.feature_cache_gb is None else int(a.feature_cache_gb * 2**30),
            precision=a.precision,
        )
    rows = [
        [
            j["job"],
            j["wall_seconds"],
            j["train_seconds"],
            j["eval_seconds"],
            f"{100 * j['test_accuracy']:.2f}",
            round(j["peak_memory_bytes"] / 2**20),
        ]
        for j in result["jobs"]
    ]
    print(table(rows, ("job", "wall s", "train s", "eval s", "test acc %", "peak MiB")))
    wall_ok = "PASS" if result["wall_pass"] else "FAIL"
    acc_ok = "PASS" if result["accuracy_pass"] else "FAIL"
    print(
        f"total {result['wall_seconds']:.1f} s wall (target < {TARGET_WALL_SECONDS:.0f} s: {wall_ok}), "
        f"{100 * result['not_training_share']:.0f}% of it not training; full fine-tune test accuracy "
        f"{100 * result['full_test_accuracy']:.2f}% (target >= {100 * TARGET_FULL_ACCURACY:.1f}%: {acc_ok})"
    )
    result.update(machine=machine_line(device), arguments=vars(a))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
