"""Strategy rules: how each strategy splits a run into phases and which blocks each phase freezes.

A phase freezes the first `frozen_blocks` blocks; frozen == number of blocks means the whole extractor
is frozen and only the head trains. Frozen blocks get requires_grad=False *and* stay in eval mode, so
their BatchNorm running statistics do not drift (timm does the same).

    linear   every block frozen              one phase
    partial  its frozen_blocks (default: half the blocks, at least one)
    full     no block frozen                 extractor at lr * extractor_lr_factor
    lp_ft    every block, then none          two phases (Kumar et al., ICLR 2022)
    linear with probe_block k: a layer probe, blocks 0..k frozen, pooled (engine.models.probe_model)

The planner, the comparison and the report ask these functions instead of restating them. Importing
this module costs no torch: the rules that need an architecture's block count import engine.models
when called, so the API can name variants without loading the training stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import SpecError
from engine.spec import FinetuneSpec, PretrainSpec, Strategy

if TYPE_CHECKING:
    from torch import nn

    from engine.models import TransferNet


@dataclass(frozen=True)
class Phase:
    name: str  # pretrain | linear | partial | full
    epochs: int
    frozen_blocks: int
    extractor_lr_factor: float  # extractor lr = head lr * this


def block_count(architecture: str) -> int:
    """The architecture's extractor blocks (engine.models knows them; imported only when asked)."""
    from engine.models import block_count as count  # imports torch: only when a rule needs the blocks

    return count(architecture)


_block_count = block_count


def _strategy(strategy: str) -> Strategy:
    try:
        return Strategy(strategy)
    except ValueError:
        allowed = ", ".join(s.value for s in Strategy)
        raise SpecError("strategy", f"unknown strategy {strategy!r}; allowed: {allowed}") from None


def accepts_frozen_blocks(strategy: str) -> bool:
    """Only partial takes frozen_blocks; linear, full and lp_ft fix their frozen blocks themselves."""
    return _strategy(strategy) == Strategy.partial


def frozen_blocks_range(architecture: str) -> tuple[int, int]:
    """partial must freeze at least one block and leave at least one to train."""
    return 1, _block_count(architecture) - 1


def default_frozen_blocks(architecture: str) -> int:
    """partial's frozen_blocks when none is given: half the blocks (rounded down), at least one."""
    low, _ = frozen_blocks_range(architecture)
    return max(low, _block_count(architecture) // 2)


def phase_frozen_blocks(strategy: str, frozen_blocks: int | None, architecture: str) -> tuple[int, ...]:
    """The blocks each fine-tune phase freezes, in order: linear (all,), partial (frozen_blocks,) with
    None meaning the default, full (0,), lp_ft (all, 0). Does not check the range (see
    resolve_frozen_blocks)."""
    kind = _strategy(strategy)
    if kind == Strategy.partial:
        return (default_frozen_blocks(architecture) if frozen_blocks is None else frozen_blocks,)
    if kind == Strategy.full:
        return (0,)
    every = _block_count(architecture)
    return (every,) if kind == Strategy.linear else (every, 0)


def frozen_blocks_of(strategy: str, frozen_blocks: int | None, architecture: str) -> int | None:
    """The blocks a fine-tune keeps frozen throughout; None for lp_ft, which freezes all, then none."""
    phases = phase_frozen_blocks(strategy, frozen_blocks, architecture)
    return phases[0] if len(phases) == 1 else None


def variant_name(strategy: str, frozen_blocks: int | None, probe_block: int | None = None) -> str:
    """linear, partial-2, full, lp_ft, probe-1: the strategy, with the frozen_blocks that tells
    partials apart; a layer probe by its block."""
    # Lenient on purpose: it names stored jobs (worker plot titles pass '' for a pre-train).
    if probe_block is not None:
        return f"probe-{probe_block}"
    return f"partial-{frozen_blocks}" if strategy == Strategy.partial else str(strategy)


def check_probe_block(spec: FinetuneSpec, architecture: str) -> None:
    """probe_block: linear only, and one of the architecture's blocks; SpecError otherwise."""
    if spec.probe_block is None:
        return
    if spec.strategy != Strategy.linear:
        raise SpecError(
            "probe_block", f"applies to strategy 'linear' only (a layer probe), not {spec.strategy.value!r}"
        )
    count = _block_count(architecture)
    if spec.probe_block >= count:
        raise SpecError(
            "probe_block",
            f"{spec.probe_block} is out of range for {architecture}, which has {count} blocks; "
            f"allowed 0..{count - 1}",
        )


def resolve_frozen_blocks(spec: FinetuneSpec, architecture: str) -> int | None:
    """The frozen_blocks a partial run uses (default: half the blocks); SpecError when out of range."""
    if not accepts_frozen_blocks(spec.strategy):
        if spec.frozen_blocks is not None:
            raise SpecError(
                "frozen_blocks", f"applies to strategy 'partial' only, not {spec.strategy.value!r}"
            )
        return None
    low, high = frozen_blocks_range(architecture)
    if spec.frozen_blocks is None:
        return default_frozen_blocks(architecture)
    if not low <= spec.frozen_blocks <= high:
        raise SpecError(
            "frozen_blocks",
            f"{spec.frozen_blocks} is out of range for {architecture}, which has {high + 1} blocks; "
            f"allowed {low}..{high} (use 'linear' to freeze them all, 'full' to freeze none)",
        )
    return spec.frozen_blocks


def plan_phases(spec: PretrainSpec | FinetuneSpec, architecture: str) -> list[Phase]:
    hp = spec.hyperparameters
    if isinstance(spec, PretrainSpec):
        return [Phase("pretrain", hp.epochs, 0, 1.0)]
    check_probe_block(spec, architecture)
    if spec.probe_block is not None:  # the probe model keeps blocks 0..probe_block, all frozen
        return [Phase(Strategy.linear.value, hp.epochs, spec.probe_block + 1, 1.0)]
    frozen = phase_frozen_blocks(spec.strategy, resolve_frozen_blocks(spec, architecture), architecture)
    if spec.strategy != Strategy.lp_ft:
        factor = hp.extractor_lr_factor if spec.strategy == Strategy.full else 1.0
        return [Phase(spec.strategy.value, hp.epochs, frozen[0], factor)]
    if hp.epochs < 2:
        raise SpecError("hyperparameters.epochs", "lp_ft needs at least 2 epochs (one per phase)")
    probe = min(hp.epochs - 1, max(1, round(hp.epochs * hp.linear_probe_fraction)))
    return [
        Phase("linear", probe, frozen[0], 1.0),
        Phase("full", hp.epochs - probe, frozen[1], hp.extractor_lr_factor),
    ]


def apply_freeze(model: TransferNet, frozen_blocks: int) -> None:
    for i, block in enumerate(model.blocks):
        block.requires_grad_(i >= frozen_blocks)
    model.head.requires_grad_(True)


def set_train_mode(model: TransferNet, frozen_blocks: int) -> None:
    model.train()
    for block in model.blocks[:frozen_blocks]:
        block.eval()


def param_groups(model: TransferNet, frozen_blocks: int, lr: float, extractor_factor: float) -> list[dict]:
    """Extractor (trainable blocks) first, head last: the head's lr is what the metrics report."""
    extractor = [p for b in model.blocks[frozen_blocks:] for p in b.parameters() if p.requires_grad]
    groups = [{"params": extractor, "lr": lr * extractor_factor, "name": "extractor"}] if extractor else []
    groups.append({"params": list(model.head.parameters()), "lr": lr, "name": "head"})
    return groups


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
