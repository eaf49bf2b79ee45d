"""From an experiment request to the job specs it needs, and the checks that name the wrong field.

    variants = strategies, with partial once per frozen_blocks value (default: half the blocks);
               transferability adds linear, full and partial at every depth 1 .. blocks-1
    grid     = lr x batch_size x optimizer from the sweep (an axis left out keeps the base value)
    jobs     = [pre-train] + variants x grid x repeats x (fine-tune, control)
               + baselines x grid x repeats
               + layer probes: blocks x repeats x (pre-trained, random-init twin), no sweep

Every linear probe (linear, the layer probes, the pixels baseline) trains linear_epochs (default:
hyperparameters.epochs): linear and the layer probes read features computed once, so their epochs
cost little, and the pixels baseline gets the same budget.

Repeat r runs with hyperparameters.seed + r (data order, split, augmentation and the head's
initialisation), the control of each repeat with the same seed, so each gain is a paired difference.

A control is the same FinetuneSpec with random_init=True: same strategy, blocks and hyperparameters,
but the source architecture's weights re-initialised, so its accuracy is what the pre-training did not
contribute. Every spec, the pre-train's too, is checked with the engine's own rules (validate_spec)
before anything is created, so the API never queues a job the worker would refuse.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from core.experiments.schemas import MAX_EXPERIMENT_JOBS, ExperimentCreate
from engine.spec import Architecture, FinetuneSpec, Hyperparameters, PretrainSpec, Strategy
from engine.strategies import accepts_frozen_blocks, default_frozen_blocks, variant_name

PIXEL_BASELINE = Architecture.pixel_linear
IMAGENET = "imagenet"
IMAGENET_SUFFIX = "@imagenet"  # a variant run from ImageNet's weights: linear@imagenet


@dataclass(frozen=True)
class PlannedJob:
    role: str  # pretrain | finetune | control | baseline
    spec: PretrainSpec | FinetuneSpec
    variant: str | None  # linear, partial-2, full, lp_ft, pixels (the baseline); None for the pre-train


class PlanError(ValueError):
    """A request that cannot be planned; `loc` is the field's path in the body."""

    def __init__(self, loc: tuple[str | int, ...], message: str, value: Any = None):
        super().__init__(message)
        self.loc = loc
        self.value = value

    def as_error(self) -> dict[str, Any]:
        """One item of a 422's `detail`, as FastAPI writes them."""
        return {"type": "value_error", "loc": ("body", *self.loc), "msg": str(self), "input": self.value}


# The most blocks any architecture has: count_jobs' bound when the architecture is not known yet
# (a pretrained_job before its row is read).
MAX_BLOCKS = 5


def _strategies(request: ExperimentCreate) -> list[Strategy]:
    """The strategies asked for; transferability adds the curve's: full (depth 0), partial, linear."""
    strategies = list(request.strategies)
    if request.transferability:
        strategies += [s for s in (Strategy.full, Strategy.partial, Strategy.linear) if s not in strategies]
    return strategies


def _frozen_values(request: ExperimentCreate, blocks: int, default: int | None = None) -> list[int | None]:
    """partial's variants: the frozen_blocks asked for, else `default` (the engine's; None when only
    counting); transferability adds every depth partial allows (1 .. blocks-1) after them."""
    if request.frozen_blocks is not None:
        values: list[int | None] = list(request.frozen_blocks)
    elif request.transferability:
        values = []
    else:
        values = [default]
    if request.transferability:
        values += [depth for depth in range(1, blocks) if depth not in values]
    return values


def _blocks_of(request: ExperimentCreate, architecture: str | None) -> int:
    """The architecture's block count; without one, the pre-train's, else the largest there is."""
    if architecture is None and request.pretrain is not None:
        architecture = request.pretrain.model.value
    if architecture is None:
        return MAX_BLOCKS
    from engine.strategies import block_count  # imports torch: only when counting a known model

    return block_count(architecture)


def _grid(request: ExperimentCreate) -> list[dict[str, Any]]:
    base = request.hyperparameters
    sweep = request.sweep
    lrs = (sweep and sweep.lr) or [base.lr]
    batch_sizes = (sweep and sweep.batch_size) or [base.batch_size]
    optimizers = (sweep and sweep.optimizer) or [base.optimizer]
    return [
        {"lr": lr, "batch_size": batch_size, "optimizer": optimizer}
        for optimizer, lr, batch_size in itertools.product(optimizers, lrs, batch_sizes)
    ]


def count_jobs(request: ExperimentCreate, architecture: str | None = None) -> int:
    """Jobs the request would create. Without `architecture` (and no pre-train to read it from) the
    depths of transferability and layer_probes are counted for the deepest architecture."""
    blocks = _blocks_of(request, architecture) if request.transferability or request.layer_probes else 0
    variants = sum(
        len(_frozen_values(request, blocks)) if accepts_frozen_blocks(s) else 1 for s in _strategies(request)
    )
    runs_per_point = 1 + int(request.controls) + int(request.imagenet)
    per_variant = len(_grid(request)) * request.repeats * runs_per_point
    baselines = len(request.baselines) * len(_grid(request)) * request.repeats
    probes = blocks * request.repeats * 2 if request.layer_probes else 0
    return variants * per_variant + baselines + probes + (1 if request.pretrain is not None else 0)


def check_request(request: ExperimentCreate) -> None:
    """Rules between fields, then the pre-train spec's own (the engine's); raises PlanError naming the
    field. Needs no database; imports the engine only for a request with a `pretrain`."""
    if (request.pretrain is None) == (request.pretrained_job is None):
        given = "both were given" if request.pretrain is not None else "neither was given"
        raise PlanError(
            ("pretrained_job",),
            f"give exactly one of 'pretrain' (a pretrain spec to run first) and 'pretrained_job' "
            f"(the id of a succeeded pretrain job); {given}",
            request.pretrained_job,
        )
    if request.frozen_blocks is not None and not any(accepts_frozen_blocks(s) for s in _strategies(request)):
        raise PlanError(
            ("frozen_blocks",),
            "frozen_blocks applies to strategy 'partial', which is not in 'strategies'; add it or "
            "leave frozen_blocks out",
            request.frozen_blocks,
        )
    last_seed = request.hyperparameters.seed + request.repeats - 1
    seed_bound = next(m.le for m in Hyperparameters.model_fields["seed"].metadata if hasattr(m, "le"))
    if last_seed > seed_bound:
        raise PlanError(
            ("repeats",),
            f"repeats run seeds {request.hyperparameters.seed}..{last_seed}, past the largest seed "
            f"{seed_bound}; lower hyperparameters.seed or repeats",
            request.repeats,
        )
    total = count_jobs(request)
    if total > MAX_EXPERIMENT_JOBS:
        grid = len(_grid(request))
        raise PlanError(
            ("sweep",),
            f"this experiment needs {total} jobs ({total - (request.pretrain is not None)} fine-tunes"
            f"{' and controls' if request.controls else ''} from a {grid}-point grid"
            f"{f', {request.repeats} repeats each' if request.repeats > 1 else ''}"
            f"{', plus the pre-train' if request.pretrain is not None else ''}); at most "
            f"{MAX_EXPERIMENT_JOBS} are allowed. Shorten a sweep list, list fewer strategies or "
            "frozen_blocks, lower repeats, set controls, transferability or layer_probes to false",
            request.sweep.model_dump(mode="json") if request.sweep else None,
        )
    _check_pretrain(request)


def _value_at(request: ExperimentCreate, loc: tuple[str | int, ...]) -> Any:
    """The request's value at loc (a 422's `input`), or None where there is none."""
    value: Any = request.model_dump(mode="json")
    for key in loc:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and isinstance(key, int) and key < len(value):
            value = value[key]
        else:
            return None
    return value


def _check_pretrain(request: ExperimentCreate) -> None:
    """The pre-train spec, when there is one, against the engine's rules (e.g. nesterov without sgd)."""
    from engine.errors import SpecError
    from engine.run import validate_spec  # imports torch: only when planning

    if request.pretrain is None:
        return
    try:
        validate_spec(request.pretrain, request.pretrain.model.value)
    except SpecError as exc:
        loc = ("pretrain", *exc.field.split("."))
        raise PlanError(loc, f"pretrain: {exc}", _value_at(request, loc)) from None


def plan_finetunes(request: ExperimentCreate, architecture: str) -> list[PlannedJob]:
    """Every fine-tune and control, in a stable order: variant, then grid point, fine-tune first.

    Raises PlanError for what only the engine can tell (frozen_blocks beyond the architecture's blocks,
    lp_ft with one epoch, nesterov with an optimiser of the sweep other than sgd), with the engine's
    message.
    """
    from engine.errors import SpecError
    from engine.run import validate_spec  # imports torch: only when planning

    _check_imagenet(request, architecture)
    base = request.hyperparameters.model_dump()
    jobs: list[PlannedJob] = []
    depths = _frozen_values(request, _blocks_of(request, architecture), default_frozen_blocks(architecture))
    for strategy in _strategies(request):
        blocks_list = depths if accepts_frozen_blocks(strategy) else [None]
        epochs = linear_epochs(request) if strategy == Strategy.linear else request.hyperparameters.epochs
        for i, blocks in enumerate(blocks_list):
            for point in _grid(request):
                spec = FinetuneSpec(
                    dataset=request.dataset,
                    strategy=strategy,
                    frozen_blocks=blocks,
                    hyperparameters={**base, **point, "epochs": epochs},
                    data=request.data,
                )
                try:
                    validate_spec(spec, architecture)
                except SpecError as exc:
                    if exc.field == "frozen_blocks" and request.frozen_blocks is not None:
                        loc: tuple[str | int, ...] = ("frozen_blocks", i)
                    else:
                        loc = tuple(exc.field.split("."))
                    raise PlanError(loc, f"{strategy.value}: {exc}", _value_at(request, loc)) from None
                name = variant_name(strategy, blocks)
                for repeat in range(request.repeats):
                    seeded = _with_seed(spec, spec.hyperparameters.seed + repeat)
                    jobs.append(PlannedJob("finetune", seeded, name))
                    if request.controls:
                        control = seeded.model_copy(update={"random_init": True})
                        jobs.append(PlannedJob("control", control, name))
                    if request.imagenet:  # the same run from ImageNet's weights; the same control
                        imagenet = seeded.model_copy(
                            update={"source_weights": IMAGENET, "model": Architecture(architecture)}
                        )
                        jobs.append(PlannedJob("finetune", imagenet, name + IMAGENET_SUFFIX))
    jobs += plan_baselines(request)
    jobs += plan_layer_probes(request, architecture)
    return jobs


def linear_epochs(request: ExperimentCreate) -> int:
    """Epochs of every linear probe (linear, the layer probes, the pixels baseline)."""
    return request.linear_epochs or request.hyperparameters.epochs


def plan_layer_probes(request: ExperimentCreate, architecture: str) -> list[PlannedJob]:
    """layer_probes: a linear probe after every block, pre-trained and its random-init twin (the same
    seed builds the same random weights), at the base hyperparameters (no sweep: the linear
    strategy's budget) and every seed. Without augmentation, so each probe's features are computed
    once and cached."""
    if not request.layer_probes:
        return []
    from engine.errors import SpecError
    from engine.run import validate_spec  # imports torch: only when planning

    data = request.data.model_copy(update={"augment": False})
    jobs = []
    for block in range(_blocks_of(request, architecture)):
        spec = FinetuneSpec(
            dataset=request.dataset,
            strategy=Strategy.linear,
            probe_block=block,
            hyperparameters={**request.hyperparameters.model_dump(), "epochs": linear_epochs(request)},
            data=data,
        )
        try:
            validate_spec(spec, architecture)
        except SpecError as exc:
            loc = ("layer_probes",)
            raise PlanError(loc, f"layer probe {block}: {exc}", True) from None
        for repeat in range(request.repeats):
            seeded = _with_seed(spec, spec.hyperparameters.seed + repeat)
            name = variant_name(Strategy.linear, None, probe_block=block)
            jobs.append(PlannedJob("finetune", seeded, name))
            jobs.append(PlannedJob("control", seeded.model_copy(update={"random_init": True}), name))
    return jobs


def _check_imagenet(request: ExperimentCreate, architecture: str) -> None:
    from engine.pretrained import IMAGENET_FILES

    if request.imagenet and architecture not in IMAGENET_FILES:
        allowed = ", ".join(a.value for a in IMAGENET_FILES)
        raise PlanError(
            ("imagenet",),
            f"torchvision has no ImageNet weights for {architecture}; pre-train one of {allowed}, or "
            "set imagenet to false",
            True,
        )


def plan_baselines(request: ExperimentCreate) -> list[PlannedJob]:
    """pixels: pixel_linear trained from scratch on the target at every grid point and seed, with the
    linear strategy's hyperparameters and data options (the same budget, the same search)."""
    if "pixels" not in request.baselines:
        return []
    base = request.hyperparameters.model_dump()
    jobs = []
    for point in _grid(request):
        for repeat in range(request.repeats):
            seed = request.hyperparameters.seed + repeat
            hyperparameters = {**base, **point, "seed": seed, "epochs": linear_epochs(request)}
            spec = PretrainSpec(
                dataset=request.dataset,
                model=PIXEL_BASELINE,
                hyperparameters=hyperparameters,
                data=request.data,
            )
            jobs.append(PlannedJob("baseline", spec, "pixels"))
    return jobs


def _with_seed(spec: FinetuneSpec, seed: int) -> FinetuneSpec:
    if seed == spec.hyperparameters.seed:
        return spec
    return spec.model_copy(update={"hyperparameters": spec.hyperparameters.model_copy(update={"seed": seed})})
