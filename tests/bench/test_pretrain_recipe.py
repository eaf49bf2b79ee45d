"""bench/pretrain_recipe.py: every recipe is a valid pre-train spec, and the table ranks on validation."""

from __future__ import annotations

import pytest

from bench.pretrain_recipe import RECIPES, markdown, recipe_spec, summarise
from engine.spec import PretrainSpec


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_is_a_valid_pretrain_spec_with_its_seed(name):
    spec = PretrainSpec.model_validate(recipe_spec(name, seed=2))
    assert spec.hyperparameters.seed == 2 and spec.dataset == "stl10"


def test_the_table_ranks_on_validation_not_test_and_gives_intervals():
    runs = [
        {"recipe": "base", "seed": s, "val_accuracy": 0.4, "test_accuracy": t, "wall_seconds": 1.0}
        for s, t in enumerate((0.9, 0.8))  # a high test score must not lift it
    ] + [
        {"recipe": "long", "seed": s, "val_accuracy": v, "test_accuracy": 0.5, "wall_seconds": 2.0}
        for s, v in enumerate((0.5, 0.6))
    ]
    rows = summarise(runs)
    assert [r["recipe"] for r in rows] == ["long", "base"]
    assert rows[0]["val"].n == 2 and rows[0]["val"].mean == pytest.approx(0.55)
    assert "55.0 ±" in markdown(rows)
