"""What a job asks for: validated, bounded, documented specs.

These pydantic models are the single source of every default and bound. The engine validates with
them, and the service reuses them as its request schemas, so the HTTP API and a notebook get the same
rules and the same error messages.

    from engine.spec import PretrainSpec
    spec = PretrainSpec(dataset="stl10", model="simple_cnn", hyperparameters={"epochs": 3})
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints


class BuiltinDataset(StrEnum):
    stl10 = "stl10"
    mnist = "mnist"
    fashion_mnist = "fashion_mnist"
    cifar10 = "cifar10"


# A built-in's name, or a folder data set's (<data root>/folders/<name>, engine/data/folders.py): the
# pattern keeps it a single, safe path component. Whether it exists is checked at submission.
DATASET_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
DatasetName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=32, pattern=DATASET_NAME_PATTERN),
    Field(
        description="stl10, mnist, fashion_mnist, cifar10, or the name of a folder data set "
        "(GET /datasets): 1-32 of a-z, 0-9, '_' and '-'."
    ),
]


class Architecture(StrEnum):
    simple_cnn = "simple_cnn"
    resnet18 = "resnet18"
    mobilenet_v3_small = "mobilenet_v3_small"
    vgg11_bn = "vgg11_bn"
    # No features: a linear classifier on the normalised pixels (at most 32x32 of them), the floor a
    # linear probe's features must beat to count as transferred. Trained from scratch, never a source.
    pixel_linear = "pixel_linear"


class Strategy(StrEnum):
    linear = "linear"  # whole extractor frozen, only the head trains
    partial = "partial"  # first `frozen_blocks` blocks frozen
    full = "full"  # everything trains, extractor at lr * extractor_lr_factor
    lp_ft = "lp_ft"  # linear probe, then full fine-tune (Kumar et al., ICLR 2022)


class OptimizerName(StrEnum):
    adam = "adam"
    adamw = "adamw"
    rmsprop = "rmsprop"
    sgd = "sgd"


class SchedulerName(StrEnum):
    cosine = "cosine"
    step = "step"
    onecycle = "onecycle"
    none = "none"


class Precision(StrEnum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class _Strict(BaseModel):
    # Unknown fields are errors: a typo like "learning_rate" must not silently train at the default.
    # NaN and Infinity (JSON readers accept them) are refused as what they are, not as out of bounds.
    model_config = ConfigDict(extra="forbid", use_enum_values=False, allow_inf_nan=False)


class Hyperparameters(_Strict):
    """How to train. Every field has a default that works for a quick run."""

    epochs: int = Field(10, ge=1, le=1000, description="Passes over the training split.")
    # At least 2: BatchNorm cannot train on one image when a feature map is 1x1 (resnet18 at 32 px and
    # below raised "Expected more than 1 value per channel"; found by test_accepted_specs_train).
    batch_size: int = Field(128, ge=2, le=4096, description="Images per optimiser step, 2..4096.")
    optimizer: OptimizerName = Field(OptimizerName.adam, description="adam, adamw, rmsprop or sgd.")
    lr: float = Field(
        1e-3,
        gt=0,
        le=10,
        description="Peak learning rate of the head (and of the whole model in pre-training).",
    )
    weight_decay: float = Field(0.0, ge=0, le=1, description="L2 penalty (decoupled for adamw).")
    momentum: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Momentum for sgd and rmsprop; null = each one's usual value (sgd 0.9, rmsprop 0).",
    )
    nesterov: bool = Field(False, description="Nesterov momentum (sgd only; needs momentum > 0).")
    scheduler: SchedulerName = Field(
        SchedulerName.cosine,
        description="Learning-rate schedule, stepped every batch: cosine, step, onecycle, none.",
    )
    step_gamma: float = Field(
        0.1, gt=0, le=1, description="step scheduler: lr factor at each third of training."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Cross-entropy label smoothing.")
    seed: int = Field(
        0,
        ge=0,
        le=2**31 - 1,
        description="Data order, augmentation and initialisation. On a CPU the same seed gives the same "
        "weights bit for bit; on a GPU cuDNN's fastest kernels may differ in the last bits between runs.",
    )
    extractor_lr_factor: float = Field(
        0.1,
        gt=0,
        le=1,
        description="full and lp_ft: the extractor trains at lr times this (seed: 'a lower learning rate').",
    )
    linear_probe_fraction: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="lp_ft: share of the epochs spent on the linear probe before full fine-tuning.",
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Stop training after this many epochs without a better validation accuracy and "
        "evaluate the best epoch's weights (needs data.val_fraction > 0). Applies to the last phase "
        "(lp_ft: its full fine-tune). null = train every epoch.",
    )
    precision: Precision = Field(
        Precision.auto,
        description="Arithmetic of the forward pass. auto: bf16 autocast on a CUDA GPU that computes bf16 "
        "natively (Ampere and later), fp32 elsewhere. bf16 on a CPU with AVX512-BF16: resnet18 fine-tunes "
        "1.4-1.8x faster, mobilenet_v3_small trains slower. Weights and optimiser state stay fp32.",
    )


class DataOptions(_Strict):
    """Which images, at what size. Caps are stratified and seeded."""

    image_size: int = Field(96, ge=16, le=512, description="Model input side in pixels (seed: 96).")
    train_samples: int | None = Field(
        None, ge=10, description="Cap on training images (before the validation split); null = all."
    )
    test_samples: int | None = Field(None, ge=10, description="Cap on test images; null = all.")
    val_fraction: float = Field(
        0.1,
        ge=0,
        le=0.5,
        description="Share of the training split held out for validation (0 = none).",
    )
    augment: bool | None = Field(
        None,
        description="Random crop, flip and Gaussian blur on training batches; null = the data set's default "
        "(on for stl10 and cifar10, off for the digit sets).",
    )


class PretrainSpec(_Strict):
    """Train an architecture from random initialisation on a source data set."""

    kind: Literal["pretrain"] = "pretrain"
    dataset: DatasetName = BuiltinDataset.stl10.value
    model: Architecture = Architecture.resnet18
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    data: DataOptions = Field(default_factory=DataOptions)


class FinetuneSpec(_Strict):
    """Adapt a trained checkpoint to a target data set with a strategy."""

    kind: Literal["finetune"] = "finetune"
    dataset: DatasetName = BuiltinDataset.mnist.value
    strategy: Strategy = Strategy.linear
    frozen_blocks: int | None = Field(
        None,
        ge=0,
        description="partial: how many leading extractor blocks stay frozen; null = half of them.",
    )
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    data: DataOptions = Field(default_factory=DataOptions)
    random_init: bool = Field(
        False,
        description="Control run: keep the source architecture but re-initialise its weights randomly, "
        "to measure how much of the source training transfers.",
    )
    probe_block: int | None = Field(
        None,
        ge=0,
        description="linear only: probe the features after this extractor block (0-based) instead of "
        "after the last: the blocks up to it, frozen, then an adaptive average pool to at most "
        "4,096 features and one Linear layer (a layer probe). null = the whole extractor.",
    )
    # Instead of a source checkpoint: torchvision's ImageNet weights for `model` (engine/pretrained.py).
    source_weights: Literal["imagenet"] | None = Field(
        None,
        description="imagenet: start from torchvision's ImageNet weights for `model` (resnet18, "
        "mobilenet_v3_small or vgg11_bn) instead of a source job or checkpoint; null = a source.",
    )
    model: Architecture | None = Field(
        None,
        description="With source_weights only: the architecture whose ImageNet weights are the start "
        "(a fine-tune of a source keeps the source's architecture).",
    )


JobSpec = Annotated[PretrainSpec | FinetuneSpec, Field(discriminator="kind")]
