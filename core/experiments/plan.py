"""From an experiment request to the job specs it needs, and the checks that name the wrong field.

    variants = strategies, with partial once per frozen_blocks value (default: half the blocks)
    grid     = lr x batch_size x optimizer from the sweep (an axis left out keeps the base value)
    jobs     = [pre-train] + variants x grid x repeats x (fine-tune, control)
               + baselines x grid x repeats

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
from engine.spec import Architecture, FinetuneSpec, Hyperparameters, PretrainSpec
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


def _frozen_values(request: ExperimentCreate, architecture: str) -> list[int | None]:
    """partial's variants: the frozen_blocks asked for, else the engine's default."""
    if request.frozen_blocks is not None:
        return list(request.frozen_blocks)
    return [default_frozen_blocks(architecture)]  # the engine's default, made explicit


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


def count_jobs(request: ExperimentCreate) -> int:
    """Jobs the request would create, counted without importing the engine."""
    variants = sum(
        len(request.frozen_blocks or [None]) if accepts_frozen_blocks(s) else 1 for s in request.strategies
    )
    runs_per_point = 1 + int(request.controls) + int(request.imagenet)
    per_variant = len(_grid(request)) * request.repeats * runs_per_point
    baselines = len(request.baselines) * len(_grid(request)) * request.repeats
    return variants * per_variant + baselines + (1 if request.pretrain is not None else 0)


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
    if request.frozen_blocks is not None and not any(accepts_frozen_blocks(s) for s in request.strategies):
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
            "frozen_blocks, lower repeats, or set controls to false",
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
    for strategy in request.strategies:
        blocks_list = _frozen_values(request, architecture) if accepts_frozen_blocks(strategy) else [None]
        for i, blocks in enumerate(blocks_list):
            for point in _grid(request):
                spec = FinetuneSpec(
                    dataset=request.dataset,
                    strategy=strategy,
                    frozen_blocks=blocks,
                    hyperparameters={**base, **point},
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
    fine-tunes' hyperparameters and data options (the same budget, the same search)."""
    if "pixels" not in request.baselines:
        return []
    base = request.hyperparameters.model_dump()
    jobs = []
    for point in _grid(request):
        for repeat in range(request.repeats):
            hyperparameters = {**base, **point, "seed": request.hyperparameters.seed + repeat}
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
