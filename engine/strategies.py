"""How each strategy splits a run into phases and which blocks each phase freezes.

A phase freezes the first `frozen_blocks` blocks; frozen == number of blocks means the whole extractor
is frozen and only the head trains. Frozen blocks get requires_grad=False *and* stay in eval mode, so
their BatchNorm running statistics do not drift (timm does the same).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from engine.errors import SpecError
from engine.models import TransferNet, block_count
from engine.spec import FinetuneSpec, PretrainSpec, Strategy


@dataclass(frozen=True)
class Phase:
    name: str  # pretrain | linear | partial | full
    epochs: int
    frozen_blocks: int
    extractor_lr_factor: float  # extractor lr = head lr * this


def frozen_blocks_range(architecture: str) -> tuple[int, int]:
    """partial must freeze at least one block and leave at least one to train."""
    return 1, block_count(architecture) - 1


def resolve_frozen_blocks(spec: FinetuneSpec, architecture: str) -> int | None:
    """The frozen_blocks a partial run uses (default: half the blocks); SpecError when out of range."""
    if spec.strategy != Strategy.partial:
        if spec.frozen_blocks is not None:
            raise SpecError(
                "frozen_blocks", f"applies to strategy 'partial' only, not {spec.strategy.value!r}"
            )
        return None
    low, high = frozen_blocks_range(architecture)
    if spec.frozen_blocks is None:
        return max(low, block_count(architecture) // 2)
    if not low <= spec.frozen_blocks <= high:
        raise SpecError(
            "frozen_blocks",
            f"{spec.frozen_blocks} is out of range for {architecture}, which has {high + 1} blocks; "
            f"allowed {low}..{high} (use 'linear' to freeze them all, 'full' to freeze none)",
        )
    return spec.frozen_blocks


def plan_phases(spec: PretrainSpec | FinetuneSpec, architecture: str) -> list[Phase]:
    n = block_count(architecture)
    hp = spec.hyperparameters
    if isinstance(spec, PretrainSpec):
        return [Phase("pretrain", hp.epochs, 0, 1.0)]
    frozen = resolve_frozen_blocks(spec, architecture)
    if spec.strategy == Strategy.linear:
        return [Phase("linear", hp.epochs, n, 1.0)]
    if spec.strategy == Strategy.partial:
        return [Phase("partial", hp.epochs, frozen, 1.0)]
    if spec.strategy == Strategy.full:
        return [Phase("full", hp.epochs, 0, hp.extractor_lr_factor)]
    if hp.epochs < 2:
        raise SpecError("hyperparameters.epochs", "lp_ft needs at least 2 epochs (one per phase)")
    probe = min(hp.epochs - 1, max(1, round(hp.epochs * hp.linear_probe_fraction)))
    return [
        Phase("linear", probe, n, 1.0),
        Phase("full", hp.epochs - probe, 0, hp.extractor_lr_factor),
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
