"""What a client may ask a job to do: the bodies of POST /jobs, on top of engine.spec.

The training bodies reuse engine.spec: one source for every default, bound and allowed value, so the
HTTP API and a notebook refuse the same inputs with the same messages. core.jobs builds job rows from
these; service/ serves them as the request schemas.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field

from engine.spec import FinetuneSpec, PretrainSpec

# Descriptions for the engine-spec fields that carry none there; filled into the JSON schema only,
# so defaults and bounds stay single-sourced in engine.spec.
_SPEC_FIELD_DOCS = {
    "kind": "pretrain: train an architecture from scratch; finetune: adapt a checkpoint or ImageNet weights.",
    "dataset": "Data set: stl10, mnist, fashion_mnist, cifar10 or a folder data set (GET /datasets).",
    "model": "Architecture: simple_cnn, resnet18, mobilenet_v3_small or vgg11_bn.",
    "strategy": "linear: train the head only; partial: freeze the first frozen_blocks blocks; "
    "full: train everything, the extractor at lr x extractor_lr_factor; "
    "lp_ft: linear probe, then full.",
    "hyperparameters": "How to train: epochs, batch size, optimiser, learning rate, schedule...",
    "data": "Which images at what size: image_size, sample caps, validation share, augmentation.",
}


def _describe_spec_fields(schema: dict[str, Any]) -> None:
    for name, prop in schema.get("properties", {}).items():
        if "description" not in prop and name in _SPEC_FIELD_DOCS:
            prop["description"] = _SPEC_FIELD_DOCS[name]


class PretrainJobCreate(PretrainSpec):
    """Pre-train an architecture from random initialisation on a source data set."""

    model_config = ConfigDict(json_schema_extra=_describe_spec_fields, title="PretrainJobCreate")


class FinetuneJobCreate(FinetuneSpec):
    """Fine-tune the checkpoint of a succeeded job on a target data set with a strategy."""

    model_config = ConfigDict(json_schema_extra=_describe_spec_fields, title="FinetuneJobCreate")

    # Exactly one of the three sources (source_error says which is wrong, naming the field).
    source: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Id of a succeeded job (pretrain or finetune) whose checkpoint is the start. Give "
        "exactly one of source, source_checkpoint and source_weights.",
    )
    source_checkpoint: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Id of a checkpoint (one trained here or imported with POST /checkpoints) to start "
        "from, instead of source.",
    )

    def source_error(self) -> tuple[str, str] | None:
        """(field, message) when not exactly one source is given; None when one is."""
        given = [
            name
            for name, value in (
                ("source", self.source),
                ("source_checkpoint", self.source_checkpoint),
                ("source_weights", self.source_weights),
            )
            if value is not None
        ]
        if len(given) == 1:
            return None
        what = "none was given" if not given else f"{' and '.join(given)} were given"
        field = given[-1] if given else "source"
        return field, (
            "give exactly one of source (a succeeded job's id), source_checkpoint (a checkpoint id) and "
            f"source_weights ('imagenet', with model); {what}"
        )

    def to_spec(self) -> FinetuneSpec:
        """The engine spec, as the worker reads it back (the source lives in the job's columns)."""
        return FinetuneSpec.model_validate(self.model_dump(exclude={"source", "source_checkpoint"}))


JobCreate = Annotated[PretrainJobCreate | FinetuneJobCreate, Field(discriminator="kind")]
