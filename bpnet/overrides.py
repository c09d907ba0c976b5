"""Run overrides: the few values people change between runs, laid over a run's specs.

A run carries its whole specs (train, retrain, inference, prune and deploy settings) as text; these
typed values let a user change the common ones (5 epochs, another input size) without editing that
text. Each override takes its type from the spec or settings field it replaces, and a set value is
checked by the models of the specs it lands in (so bounds and cross-field rules stay declared
once). Its unset value (0, -1.0 or "": a pipeline parameter needs a concrete value of its type)
keeps the spec's. A set value replaces every field it stands for (``num_epoch`` the train and the
retrain spec's; the input size the train and retrain ``image_dims``, the label ``target_shape``
derived from them, the inference spec's and the export ``input_shape``), so the steps write, in
their resolved specs, the value the run used.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, ValidationError, create_model

from bpnet.errors import SpecError
from bpnet.settings import ExportCalibrationSettings, PromotionSettings, PruneSettings
from bpnet.specs.base import DEFAULT_INPUT_SHAPE, MODEL_STRIDE, SpecModel
from bpnet.specs.inference import InferenceSpec
from bpnet.specs.loader import problem
from bpnet.specs.train import DataloaderConfig, ImageDims, LearningRateSchedule, TrainSpec, base_rate_field

SPEC_MODELS: dict[str, type[BaseModel]] = {"train": TrainSpec, "retrain": TrainSpec, "inference": InferenceSpec,
                                           "prune": PruneSettings, "export": ExportCalibrationSettings}
"""The specs a run carries, by role, and the model that validates each."""

Key = str | int | Callable[[dict], str]
"""A step into a spec mapping: a key, an index into the list found there, or a key the section chooses."""
Landing = tuple[str, tuple[Key, ...]]
"""Where an override lands: a spec role (SPEC_MODELS) and the key path in it."""
_TRAINING = ("train", "retrain")
_DIMS = ("dataloader", "image_config", "image_dims")
_TARGET_SHAPE = ("dataloader", "pose_config", "target_shape")


@dataclass(frozen=True)
class Override:
    """One typed run parameter: the field whose type it takes, its unset value, the fields it
    replaces (none: the value is checked by ``source`` alone) and what it means to the user."""

    source: type[BaseModel]
    field: str
    unset: int | float
    lands: tuple[Landing, ...]
    means: str

    @property
    def annotation(self) -> type:
        return self.source.model_fields[self.field].annotation


def _training(*path: Key) -> tuple[Landing, ...]:
    return tuple((role, path) for role in _TRAINING)


def _input_side(index: int, name: str) -> tuple[Landing, ...]:
    return (*_training(*_DIMS, name), ("inference", ("input_shape", index)), ("export", ("input_shape", index)))


OVERRIDES: dict[str, Override] = {
    "num_epoch": Override(TrainSpec, "num_epoch", 0, _training("num_epoch"), "epochs of the train and the retrain"),
    "batch_size": Override(DataloaderConfig, "batch_size", 0, _training("dataloader", "batch_size"),
                           "batch size of the train and the retrain"),
    "base_learning_rate": Override(
        LearningRateSchedule, "base_learning_rate", 0.0,
        _training("optimizer", "learning_rate_schedule", base_rate_field),
        "peak learning rate of the train and the retrain (learning_rate of an exponential decay schedule)"),
    "input_height": Override(ImageDims, "height", 0, _input_side(0, "height"),
                             f"network input height, a multiple of {MODEL_STRIDE}: training, export, "
                             "calibration, evaluation and inference"),
    "input_width": Override(ImageDims, "width", 0, _input_side(1, "width"),
                            f"network input width, a multiple of {MODEL_STRIDE}: training, export, calibration, "
                            "evaluation and inference"),
    "pruning_threshold": Override(PruneSettings, "pruning_threshold", -1.0, (("prune", ("pruning_threshold",)),),
                                  "threshold the normalized filter norms are compared against"),
    "min_ap": Override(PromotionSettings, "min_ap", -1.0, (), "AP the retrained model must reach to be released"),
}

RunOverrides = create_model(
    "RunOverrides", __base__=SpecModel,
    __doc__="The typed run parameters; each at its unset value keeps the spec's (see OVERRIDES).",
    **{name: (o.annotation, Field(o.unset, description=f"{o.means}; {o.unset} = the spec's"))
       for name, o in OVERRIDES.items()},
    engine_targets=(str, Field("", description="comma-separated names of the run spec's engine "
                               "targets to build; empty = all of them")))


@dataclass(frozen=True)
class Resolved:
    """A run's specs with the overrides laid over them: ``specs`` by role (``changed``: the roles an
    override landed in), the promotion gate's minimum and the engine targets to build."""

    specs: dict[str, dict[str, Any]]
    changed: frozenset[str]
    min_ap: float
    targets: tuple[str, ...]


def set_values(overrides: BaseModel) -> dict[str, Any]:
    """The overrides that are set, by name: each field's default is its unset value."""
    return overrides.model_dump(exclude_defaults=True)


def _put(data: dict[str, Any], path: tuple[Key, ...], value: Any) -> str:
    """Set ``value`` at ``path`` in ``data`` (sections created as needed; an index replaces that
    element of the list, the default input shape when there is none); returns the dotted field."""
    keys: list[str] = []
    section = data
    for step, following in zip(path, (*path[1:], None), strict=True):
        if isinstance(step, int):
            continue
        key = step(section) if callable(step) else step
        keys.append(key)
        if isinstance(following, int):
            items = list(section.get(key) or DEFAULT_INPUT_SHAPE)
            items[following] = value
            section[key] = items
        elif following is None:
            section[key] = value
        else:
            section = section.setdefault(key, {})
    return ".".join(keys)


def _derive_target_shape(train: dict[str, Any]) -> None:
    """The label maps' shape follows the input size (DataloaderConfig requires input / stride)."""
    dims = train.get("dataloader", {}).get("image_config", {}).get("image_dims", {})
    sides = [dims.get(side, ImageDims.model_fields[side].default) for side in ("height", "width")]
    _put(train, _TARGET_SHAPE, [side // MODEL_STRIDE if isinstance(side, int) else side for side in sides])


def _select(names: str, available: Sequence[str]) -> tuple[tuple[str, ...], list[str]]:
    if not names.strip():
        return tuple(available), []
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in available]
    if not unknown:
        return tuple(n for n in available if n in chosen), []
    offer = ", ".join(available) if available else "none: the run spec builds no engines"
    return (), [f"engine_targets: {names!r} — comma-separated names of the run spec's engine targets ({offer}); "
                f"unknown: {', '.join(unknown)}"]


def _lay(specs: dict[str, dict[str, Any]], chosen: Mapping[str, Any]) -> dict[tuple[str, str], list[str]]:
    """The set overrides ``chosen`` put into ``specs`` (by role; the roles absent are skipped), the
    label shape derived from a new input size; returns (role, dotted field) -> the parameters set there."""
    landed: dict[tuple[str, str], list[str]] = {}
    for name, value in chosen.items():
        override = OVERRIDES.get(name)
        for role, path in override.lands if override else ():
            if role in specs:
                landed.setdefault((role, _put(specs[role], path, value)), []).append(name)
    if {"input_height", "input_width"} & chosen.keys():
        for role in _TRAINING:
            if role in specs:
                _derive_target_shape(specs[role])
    return landed


def lay_over(role: str, spec: Mapping[str, Any], overrides: BaseModel) -> dict[str, Any]:
    """The spec of ``role`` (SPEC_MODELS) with the set ``overrides`` that land in it laid over: what
    a step does with its own spec. Not validated here: the step's model checks it, and
    ``resolve`` has checked every spec with the same overrides before any step ran."""
    out = {role: copy.deepcopy(dict(spec))}
    _lay(out, set_values(overrides))
    return out[role]


def resolve(specs: Mapping[str, Mapping[str, Any]], overrides: BaseModel, min_ap: float,
            targets: Sequence[str]) -> Resolved:
    """``specs`` (mappings by role, see SPEC_MODELS) with the set ``overrides`` laid over them and
    each validated by its model; ``min_ap`` and ``targets`` are the run spec's gate minimum and
    engine target names. Every problem is one line of the SpecError, naming the parameter, its
    value and what was expected, so a bad value stops the run before any work."""
    chosen = set_values(overrides)
    out = {role: copy.deepcopy(dict(data)) for role, data in specs.items()}
    landed = _lay(out, chosen)  # (role, dotted field) -> the parameters set there
    lines: list[str] = []
    for name, value in chosen.items():
        override = OVERRIDES.get(name)
        if override and not override.lands:
            lines += _problems(override.source, {override.field: value}, "", {(override.field,): [name]}, chosen)
    for role, data in out.items():
        lines += _problems(SPEC_MODELS[role], data, role, {(d,): n for (r, d), n in landed.items() if r == role},
                           chosen)
    selected, target_lines = _select(str(chosen.get("engine_targets", "")), targets)
    if lines or target_lines:
        raise SpecError(list(dict.fromkeys(lines + target_lines)))
    gate = chosen.get("min_ap", min_ap)
    return Resolved(out, frozenset(r for r, _ in landed), gate, selected)


def _problems(model: type[BaseModel], data: Mapping[str, Any], role: str, landed: dict[tuple[str], list[str]],
              chosen: dict[str, Any]) -> list[str]:
    """One line per validation error of ``data``: blamed on the parameters that landed on the
    failing field when there are such, else on the spec (with the overrides that were set)."""
    try:
        model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            dotted, shown, expected = problem(model, err)
            names = landed.get((dotted,))
            if names:
                lines.append(f"{', '.join(names)}: {', '.join(str(chosen[n]) for n in names)} — {expected}")
            else:
                given = ", ".join(f"{n}={chosen[n]}" for n in dict.fromkeys(n for ns in landed.values() for n in ns))
                lines.append(f"{role} spec: {dotted}: {shown} — {expected}" + (f" (with {given})" if given else ""))
        return lines
    return []
