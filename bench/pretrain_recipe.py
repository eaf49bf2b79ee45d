"""Which STL-10 pre-training recipe gives the best source model, on the real 1,000-image subset.

    python bench/prepare_data.py                              # once: ../shared/data -> .bench-data
    python -m bench.pretrain_recipe                           # every recipe, 3 seeds, simple_cnn
    python -m bench.pretrain_recipe --recipes base,long --seeds 1

Each recipe changes one thing from the quick preset's pre-train (`base`: simple_cnn at 32x32, 15 epochs,
adam lr 0.002, batch 64, cosine schedule, the seed's augmentation), or combines the changes that
helped. Every run trains on 900 of the subset's 1,000 training images, validates on the other 100 and
is tested on the 200 test images (the official split has 5,000 and 8,000). Recipes are ranked by mean
validation accuracy: the test split only reports, it never chooses (the issue's rule). A row gives
means over the seeds with the half-width of the 95% t-interval. Accuracy does not depend on how busy
the machine is; the seconds do.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine_line, prepare_root, resolve_data_root

BASE: dict[str, Any] = {
    "model": "simple_cnn",
    "hyperparameters": {"epochs": 15, "batch_size": 64, "optimizer": "adam", "lr": 0.002},
    "data": {"image_size": 32},
}

# name -> (what changed, the overrides on BASE). Each is one change, except the combinations.
RECIPES: dict[str, tuple[str, dict[str, Any]]] = {
    "base": ("quick preset: 15 epochs, adam 0.002, batch 64, cosine, augmented", {}),
    "long": ("40 epochs", {"hyperparameters": {"epochs": 40}}),
    "smooth": ("40 epochs, label smoothing 0.1", {"hyperparameters": {"epochs": 40, "label_smoothing": 0.1}}),
    "onecycle": (
        "40 epochs, one-cycle (warm-up)",
        {"hyperparameters": {"epochs": 40, "scheduler": "onecycle"}},
    ),
    "adamw": (
        "40 epochs, adamw weight decay 0.05",
        {"hyperparameters": {"epochs": 40, "optimizer": "adamw", "weight_decay": 0.05}},
    ),
    "batch32": ("40 epochs, batch 32", {"hyperparameters": {"epochs": 40, "batch_size": 32}}),
    "noaug": ("40 epochs, no augmentation", {"hyperparameters": {"epochs": 40}, "data": {"augment": False}}),
    "px48": ("40 epochs at 48x48", {"hyperparameters": {"epochs": 40}, "data": {"image_size": 48}}),
    "long80": ("80 epochs", {"hyperparameters": {"epochs": 80}}),
    "smooth80": (
        "80 epochs, label smoothing 0.1, adamw 0.05",
        {
            "hyperparameters": {
                "epochs": 80,
                "label_smoothing": 0.1,
                "optimizer": "adamw",
                "weight_decay": 0.05,
            }
        },
    ),
}


def recipe_spec(name: str, seed: int) -> dict[str, Any]:
    """BASE with the recipe's overrides and the seed, as a PretrainSpec's fields."""
    overrides = RECIPES[name][1]
    return {
        "dataset": "stl10",
        "model": overrides.get("model", BASE["model"]),
        "hyperparameters": {**BASE["hyperparameters"], **overrides.get("hyperparameters", {}), "seed": seed},
        "data": {**BASE["data"], **overrides.get("data", {})},
    }


def run_recipe(name: str, seed: int, data_root: Path) -> dict[str, Any]:
    """One pre-train job through the engine, as the worker runs it; its val/test accuracy and seconds."""
    from engine.run import run_job
    from engine.spec import PretrainSpec

    spec = PretrainSpec.model_validate(recipe_spec(name, seed))
    with tempfile.TemporaryDirectory(prefix="recipe-") as tmp:
        started = time.perf_counter()
        result = run_job(spec, data_root=data_root, workdir=Path(tmp) / "w", checkpoint_dir=Path(tmp) / "c")
        wall = time.perf_counter() - started
    val = [e.accuracy for e in result.epochs if e.phase == "val"]
    return {
        "recipe": name,
        "seed": seed,
        "val_accuracy": val[-1] if val else None,
        "test_accuracy": result.evaluation.accuracy,
        "wall_seconds": wall,
    }


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per recipe: n, means and 95% half-widths of val and test accuracy, mean seconds."""
    from core.experiments.stats import mean_ci95

    rows = []
    for name in dict.fromkeys(r["recipe"] for r in runs):
        mine = [r for r in runs if r["recipe"] == name]
        val = mean_ci95([r["val_accuracy"] for r in mine])
        test = mean_ci95([r["test_accuracy"] for r in mine])
        seconds = sum(r["wall_seconds"] for r in mine) / len(mine)
        rows.append({"recipe": name, "what": RECIPES[name][0], "n": len(mine), "val": val, "test": test,
                     "seconds": seconds})  # fmt: skip
    return sorted(rows, key=lambda row: -row["val"].mean)


def _cell(interval: Any) -> str:
    """A MeanInterval as percent: "41.5 ± 3.2" (no ± for a single run)."""
    text = f"{100 * interval.mean:.1f}"
    return text + (f" ± {100 * interval.ci95:.1f}" if interval.ci95 is not None else "")


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| recipe | change from the quick preset | n | val acc % (100) | test acc % (200) | s a run |",
        "| --- | --- | --: | --: | --: | --: |",
    ]
    for r in rows:
        cells = [
            r["recipe"],
            r["what"],
            str(r["n"]),
            _cell(r["val"]),
            _cell(r["test"]),
            f"{r['seconds']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated names")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", help="write every run and the table as JSON here")
    args = parser.parse_args(argv)
    root = resolve_data_root(args.data_root)
    prepare_root(root, ["stl10"])
    names = [n for n in args.recipes.split(",") if n]
    unknown = sorted(set(names) - set(RECIPES))
    if unknown:
        parser.error(f"unknown recipes {unknown}; known: {', '.join(RECIPES)}")
    runs = []
    for seed in range(args.seeds):  # seeds outermost: a partial run still has every recipe once
        for name in names:
            runs.append(run_recipe(name, seed, root))
            print(json.dumps(runs[-1]), flush=True)
    rows = summarise(runs)
    print(machine_line("cpu"))
    print(markdown(rows))
    if args.out:
        table_rows = [{**r, "val": vars(r["val"]), "test": vars(r["test"])} for r in rows]
        Path(args.out).write_text(json.dumps({"runs": runs, "rows": table_rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
