"""The two forms (a new job, a new experiment): their fields, the JSON body a submission makes, and
the API's 422 mapped back onto the fields.

A field's name is its dotted path in the body (`hyperparameters.lr`), so an error's `loc` names the
field it belongs to. A blank field is left out of the body (the API's default applies); a number that
does not parse is sent as typed, so the API's own message says what is wrong with it.

    body = form_body(JOB_FIELDS, form, base={})        # form: field name -> submitted values
    errors = field_errors(JOB_FIELDS, exc.errors(), tag="finetune")
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.experiments.presets import PRESETS
from engine.spec import Architecture, BuiltinDataset, DataOptions, Hyperparameters, OptimizerName, Strategy


@dataclass(frozen=True)
class Field:
    name: str  # dotted path in the JSON body
    label: str
    widget: str = "number"  # number | text | select | checkbox | choices (several checkboxes) | list
    number: type = int  # for number and list widgets
    choices: tuple[str, ...] = ()
    optional_choice: bool = False  # a select with a blank "(default)" entry
    section: str = ""  # job form: "pretrain" or "finetune" only; experiment form: a fieldset name
    placeholder: str = ""
    help: str = ""


def _default(model: Any, name: str) -> str:
    value = model.model_fields[name].default
    return "" if value is None else str(getattr(value, "value", value))


def _names(enum: Any) -> tuple[str, ...]:
    return tuple(member.value for member in enum)


HP, DATA = Hyperparameters, DataOptions


def _hyperparameter_fields(prefix: str, section: str = "") -> list[Field]:
    return [
        Field(f"{prefix}epochs", "epochs", section=section, placeholder=_default(HP, "epochs")),
        Field(f"{prefix}batch_size", "batch size", section=section, placeholder=_default(HP, "batch_size")),
        Field(f"{prefix}lr", "learning rate", number=float, section=section, placeholder=_default(HP, "lr")),
    ]


_OPTIMIZER = Field(
    "hyperparameters.optimizer", "optimiser", "select", choices=_names(OptimizerName), optional_choice=True
)

JOB_FIELDS: tuple[Field, ...] = (
    Field("kind", "kind", "select", choices=("pretrain", "finetune")),
    Field("source", "source job", "select", section="finetune", help="a succeeded job with a checkpoint"),
    Field("dataset", "data set", "select", choices=_names(BuiltinDataset)),
    Field("model", "architecture", "select", choices=_names(Architecture), section="pretrain"),
    Field("strategy", "strategy", "select", choices=_names(Strategy), section="finetune"),
    Field("frozen_blocks", "frozen blocks", section="finetune", help="partial only; blank: half of them"),
    Field("random_init", "control: random weights", "checkbox", section="finetune"),
    *_hyperparameter_fields("hyperparameters."),
    _OPTIMIZER,
    Field("data.image_size", "image size", placeholder=_default(DATA, "image_size")),
    Field("data.train_samples", "training images (cap)", placeholder="all"),
    Field("data.val_fraction", "validation share", number=float, placeholder=_default(DATA, "val_fraction")),
)

EXPERIMENT_FIELDS: tuple[Field, ...] = (
    Field("name", "name", "text", section="study"),
    Field(
        "pretrained_job",
        "reuse a pre-train",
        "select",
        optional_choice=True,
        section="study",
        help="blank: pre-train a new model with the settings below",
    ),
    Field(
        "pretrain.dataset", "source data set", "select", choices=_names(BuiltinDataset), section="pretrain"
    ),
    Field("pretrain.model", "architecture", "select", choices=_names(Architecture), section="pretrain"),
    *_hyperparameter_fields("pretrain.hyperparameters.", "pretrain"),
    Field(
        "pretrain.data.image_size", "image size", section="pretrain", placeholder=_default(DATA, "image_size")
    ),
    Field("dataset", "target data set", "select", choices=_names(BuiltinDataset), section="fine-tunes"),
    Field("strategies", "strategies", "choices", choices=_names(Strategy), section="fine-tunes"),
    Field(
        "frozen_blocks",
        "frozen blocks (partial)",
        "list",
        section="fine-tunes",
        placeholder="half",
        help="comma-separated, one variant each",
    ),
    *_hyperparameter_fields("hyperparameters.", "fine-tunes"),
    Field("data.image_size", "image size", section="fine-tunes", placeholder=_default(DATA, "image_size")),
    Field("data.train_samples", "training images (cap)", section="fine-tunes", placeholder="all"),
    Field(
        "sweep.lr",
        "sweep: learning rates",
        "list",
        number=float,
        section="sweep",
        help="comma-separated; blank: no sweep",
    ),
    Field("sweep.batch_size", "sweep: batch sizes", "list", section="sweep"),
    Field("sweep.optimizer", "sweep: optimisers", "choices", choices=_names(OptimizerName), section="sweep"),
    Field("controls", "controls from random weights", "checkbox", section="sweep"),
)

# ---------------------------------------------------------------- body <-> form


def _parse_number(text: str, number: type) -> Any:
    try:
        return number(text)
    except ValueError:
        return text  # the API says what is wrong with it


def _get(body: Mapping[str, Any], path: str) -> Any:
    value: Any = body
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _set(body: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    for key in keys[:-1]:
        child = body.get(key)
        if not isinstance(child, dict):
            child = body[key] = {}
        body = child
    body[keys[-1]] = value


def _drop(body: dict[str, Any], path: str) -> None:
    keys = path.split(".")
    parents = [body]
    for key in keys[:-1]:
        child = parents[-1].get(key)
        if not isinstance(child, dict):
            return
        parents.append(child)
    parents[-1].pop(keys[-1], None)
    for parent, key in zip(reversed(parents[:-1]), reversed(keys[:-1]), strict=True):
        if parent.get(key) == {}:
            parent.pop(key)  # no empty objects left behind: {"sweep": {}} means a sweep of nothing


def form_body(
    fields: Iterable[Field], form: Mapping[str, Sequence[str]], base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON body of a submitted form, on top of `base` (a preset): each field sets its path, or
    removes it when sent blank; a field not sent at all keeps the base's value (a checkbox, which is
    not sent when unchecked, is always applied). form: name -> every value sent under it."""
    body = copy.deepcopy(dict(base or {}))
    for field in fields:
        if field.name not in form and field.widget not in ("checkbox", "choices"):
            continue
        values = [v.strip() for v in form.get(field.name, [])]
        text = values[-1] if values else ""
        value: Any
        if field.widget == "checkbox":
            value = bool(text) and text not in ("0", "false", "off")
        elif field.widget == "choices":
            value = [v for v in values if v]
            if not value and field.name != "strategies":  # no strategy at all is the API's 422 to give
                _drop(body, field.name)
                continue
        elif not text:
            _drop(body, field.name)
            continue
        elif field.widget == "list":
            value = [_parse_number(part.strip(), field.number) for part in text.split(",") if part.strip()]
        elif field.widget == "number":
            value = _parse_number(text, field.number)
        else:
            value = text
        _set(body, field.name, value)
    return body


def job_body(form: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """POST /jobs's body: only the fields of the chosen kind."""
    kind = (form.get("kind") or ["pretrain"])[-1]
    other = "finetune" if kind == "pretrain" else "pretrain"
    return form_body([f for f in JOB_FIELDS if f.section != other], form)


def experiment_body(form: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """POST /experiments's body, on top of the preset the form started from."""
    preset = (form.get("preset") or [""])[-1]
    body = form_body(EXPERIMENT_FIELDS, form, PRESETS.get(preset, {}))
    if body.get("pretrained_job"):
        body.pop("pretrain", None)
    return body


def form_values(fields: Iterable[Field], body: Mapping[str, Any]) -> dict[str, Any]:
    """What each field shows for a body (a preset, or what was submitted)."""
    values: dict[str, Any] = {}
    for field in fields:
        value = _get(body, field.name)
        if field.widget == "choices":
            values[field.name] = [str(v) for v in value or []]
        elif field.widget == "checkbox":
            values[field.name] = bool(value)
        elif field.widget == "list":
            values[field.name] = (
                ", ".join(str(v) for v in value) if isinstance(value, list) else (value or "")
            )
        else:
            values[field.name] = "" if value is None else str(value)
    return values


# ---------------------------------------------------------------- the API's 422 on the fields


@dataclass
class FormErrors:
    by_field: dict[str, list[str]]
    general: list[str]  # errors of no field on the form, with where they were

    def __bool__(self) -> bool:
        return bool(self.by_field or self.general)


def field_errors(
    fields: Iterable[Field], errors: Iterable[Mapping[str, Any]], tag: str | None = None
) -> FormErrors:
    """Each error of a 422's detail on the field its `loc` names (list positions and the union's
    `kind` tag skipped), or, when no field matches, in `general`."""
    names = {f.name for f in fields}
    found = FormErrors({}, [])
    for error in errors:
        loc = [str(part) for part in error.get("loc", ()) if not isinstance(part, int)]
        if loc[:1] == ["body"]:
            loc = loc[1:]
        if tag is not None and loc[:1] == [tag]:
            loc = loc[1:]
        message = str(error.get("msg", "invalid"))
        for end in range(len(loc), 0, -1):  # the longest prefix that is a field
            name = ".".join(loc[:end])
            if name in names:
                found.by_field.setdefault(name, []).append(message)
                break
        else:
            found.general.append(f"{'.'.join(loc) or 'body'}: {message}")
    return found


def detail_errors(fields: Iterable[Field], detail: str) -> FormErrors:
    """A 4xx message like `source: job 'x' not found ...` beside the field it starts with."""
    name, sep, rest = detail.partition(":")
    if sep and name in {f.name for f in fields}:
        return FormErrors({name: [rest.strip()]}, [])
    return FormErrors({}, [detail])
