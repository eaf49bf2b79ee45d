"""Strategy rules: which blocks each strategy freezes, partial's default, which strategies take
frozen_blocks, and the variant names the planner, the comparison and the report share."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine.errors import SpecError
from engine.models import block_count
from engine.spec import FinetuneSpec, Strategy
from engine.strategies import (
    accepts_frozen_blocks,
    default_frozen_blocks,
    frozen_blocks_of,
    phase_frozen_blocks,
    plan_phases,
    resolve_frozen_blocks,
    variant_name,
)

ARCHITECTURES = ["simple_cnn", "resnet18", "mobilenet_v3_small", "vgg11_bn"]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_linear_freezes_every_block(architecture):
    assert phase_frozen_blocks("linear", None, architecture) == (block_count(architecture),)
    assert frozen_blocks_of("linear", None, architecture) == block_count(architecture)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_full_freezes_no_block(architecture):
    assert phase_frozen_blocks("full", None, architecture) == (0,)
    assert frozen_blocks_of("full", None, architecture) == 0


def test_partial_freezes_its_frozen_blocks():
    assert phase_frozen_blocks("partial", 3, "resnet18") == (3,)
    assert frozen_blocks_of("partial", 1, "simple_cnn") == 1


def test_partial_without_frozen_blocks_freezes_the_default():
    assert frozen_blocks_of("partial", None, "simple_cnn") == default_frozen_blocks("simple_cnn") == 2


def test_lp_ft_freezes_every_block_then_none_so_it_has_no_single_value():
    assert phase_frozen_blocks("lp_ft", None, "simple_cnn") == (4, 0)
    assert frozen_blocks_of("lp_ft", None, "simple_cnn") is None


@pytest.mark.parametrize("architecture, default", [("simple_cnn", 2), ("resnet18", 2), ("vgg11_bn", 2)])
def test_the_default_frozen_blocks_is_half_the_blocks_rounded_down(architecture, default):
    assert default_frozen_blocks(architecture) == default == block_count(architecture) // 2


def test_only_partial_accepts_frozen_blocks():
    assert [s.value for s in Strategy if accepts_frozen_blocks(s)] == ["partial"]
    assert accepts_frozen_blocks("partial") and not accepts_frozen_blocks("lp_ft")


def test_an_unknown_strategy_is_refused_with_the_allowed_ones():
    with pytest.raises(SpecError) as caught:
        phase_frozen_blocks("frozen", None, "simple_cnn")

    assert caught.value.field == "strategy" and "allowed: linear, partial, full, lp_ft" in str(caught.value)


@pytest.mark.parametrize(
    "strategy, frozen_blocks, name",
    [
        ("linear", None, "linear"),
        ("partial", 2, "partial-2"),
        ("full", None, "full"),
        ("lp_ft", None, "lp_ft"),
    ],
)
def test_a_variant_is_the_strategy_with_partials_frozen_blocks(strategy, frozen_blocks, name):
    assert variant_name(strategy, frozen_blocks) == name
    assert variant_name(Strategy(strategy), frozen_blocks) == name


def test_the_default_is_what_a_partial_run_resolves_to():
    spec = FinetuneSpec(strategy="partial")
    assert resolve_frozen_blocks(spec, "resnet18") == default_frozen_blocks("resnet18")


@pytest.mark.parametrize("strategy", list(Strategy))
def test_the_phases_freeze_what_the_rules_say(strategy):
    spec = FinetuneSpec(strategy=strategy, hyperparameters={"epochs": 4})
    phases = plan_phases(spec, "simple_cnn")

    assert tuple(p.frozen_blocks for p in phases) == phase_frozen_blocks(strategy, None, "simple_cnn")


def test_importing_the_rules_costs_no_torch():
    code = "import sys, engine.strategies; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "False"
