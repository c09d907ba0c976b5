"""Shared machinery of every spec model: strictness, ``__class_name__`` keys and spec paths.

Spec models reject unknown keys (they are usually typos; the loader turns the rejection into a
"did you mean" line). Every field inherits one number policy: floats must be finite (a NaN
learning rate or rotation validates nowhere and fails late everywhere) and ``true``/``false`` is
never read as 1/0 where a number is expected. Fields that hold filesystem paths are typed
``SpecPath`` so that they are resolved in exactly one way: relative to a root the user can
override, and with absolute prefixes (the guide's ``/workspace/...``) remappable; inputs the user
must supply are typed ``InputFile``/``InputDir`` and checked to exist when the loader is asked to
(the CLI does, so a missing file stops the step before its results folder exists).
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, field_validator

from bpnet.errors import UsageError

# Upper bounds shared by the spec models. Values that size memory (batches, buffers, image sides,
# counts of things held at once) are bounded so a typo fails validation instead of the machine:
# ``shuffle_buffer_size: 1.0e12`` would otherwise reach TensorFlow as a buffer of 10^12 records.
MAX_IMAGE_SIDE = 2048
"""Largest network input height/width, in pixels (the guide's models use 256-640)."""
MAX_BATCH = 1024
"""Largest batch of images held at once (training, calibration, engine max batch)."""
MAX_COUNT = 10**9
"""Bound of plain counters (steps, epochs): far beyond any real run, within int64 everywhere."""
MODEL_STRIDE = 8
"""The network's output stride: input heights and widths are multiples of it."""
DEFAULT_INPUT_SHAPE: tuple[int, int] = (368, 368)
"""The network input (height, width) the guide uses wherever none is given."""


def check_input_shape(value: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of a network input: positive multiples of the stride, at most MAX_IMAGE_SIDE."""
    if any(v <= 0 or v % MODEL_STRIDE for v in value):
        raise ValueError(f"height and width must be positive multiples of the model stride {MODEL_STRIDE}")
    if max(value) > MAX_IMAGE_SIDE:
        raise ValueError(f"height and width must be at most {MAX_IMAGE_SIDE}")
    return value


class CrossFieldError(ValueError):
    """A rule between fields of one section; ``fields`` names them, the first is the one reported
    (so an error reads ``section.field: value — ...`` instead of printing the whole section).
    ``source``, the validated section, gives the reported value even when it is a default."""

    def __init__(self, message: str, *fields: str, source: BaseModel | None = None):
        super().__init__(message)
        self.fields = fields
        self.has_value = source is not None and bool(fields)
        self.value: Any = source
        for part in fields[0].split(".") if self.has_value else ():
            self.value = getattr(self.value, part, None)


class SpecModel(BaseModel):
    """Base of all spec sections: unknown keys are errors, assignment is validated, floats are
    finite and booleans are not numbers."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True,
                              allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        """pydantic's lax mode reads ``num_epoch: true`` as 1; a boolean where a number is meant
        is a mistake in the spec, so it is refused (for numbers inside lists and tuples too)."""
        spec_field = cls.model_fields.get(info.field_name or "")
        if spec_field is not None and _bool_as_number(spec_field.annotation, value):
            raise ValueError("expected a number, not true/false")
        return value


def _bool_as_number(annotation: Any, value: Any) -> bool:
    """Whether ``value`` holds a bool where ``annotation`` asks for an int or a float."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _bool_as_number(args[0], value)
    if origin in (typing.Union, types.UnionType):
        return bool not in args and any(_bool_as_number(a, value) for a in args)
    if annotation in (int, float):
        return isinstance(value, bool)
    if origin in (list, tuple) and isinstance(value, list | tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return any(_bool_as_number(a, v) for a, v in zip(args, value, strict=False))
        return bool(args) and any(_bool_as_number(args[0], v) for v in value)
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return any(_bool_as_number(args[1], v) for v in value.values())
    return False


@dataclass(frozen=True)
class PathContext:
    """How spec paths are resolved.

    root: relative paths are joined to it (default: the directory holding the spec file).
    path_map: (old_prefix, new_prefix) pairs applied to absolute paths, first match wins; this is
    how the guide's ``/workspace/...`` paths are remapped without editing the spec.

    check_inputs: if true, ``InputFile``/``InputDir`` fields must exist (and pass their content
    check) at validation time; off for specs validated away from where the step runs (a run
    spec's step specs, whose inputs are produced or bound later).
    """

    root: Path | None = None
    path_map: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    check_inputs: bool = False

    def resolve(self, value: str) -> str:
        for old, new in self.path_map:
            old_norm = old.rstrip("/")
            if value == old_norm or value.startswith(old_norm + "/"):
                value = new.rstrip("/") + value[len(old_norm):]
                break
        path = Path(os.path.expanduser(value))
        if not path.is_absolute() and self.root is not None:
            path = self.root / path
        return os.path.normpath(str(path.absolute())) if (path.is_absolute() or self.root) else str(path)


def parse_path_map(items: list[str] | str | None) -> tuple[tuple[str, str], ...]:
    """Parse ``OLD=NEW`` entries (a list, or one comma-separated string as in BPNET_PATH_MAP)."""
    if not items:
        return ()
    if isinstance(items, str):
        items = [i for i in items.split(",") if i.strip()]
    pairs = []
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise UsageError(f"path map entry '{item}' — expected OLD_PREFIX=NEW_PREFIX")
        # A relative target is relative to the working directory, as on any command line.
        pairs.append((old.strip(), os.path.abspath(os.path.expanduser(new.strip()))))
    return tuple(pairs)


def _context(info: ValidationInfo) -> PathContext | None:
    ctx = (info.context or {}).get("paths") if info.context else None
    return ctx if isinstance(ctx, PathContext) else None


def inputs_checked(info: ValidationInfo) -> bool:
    """Whether this validation must check that input files exist (see PathContext)."""
    ctx = _context(info)
    return bool(ctx and ctx.check_inputs)


def _resolve_spec_path(value: str, info: ValidationInfo) -> str:
    ctx = _context(info)
    return ctx.resolve(value) if ctx else value


def _input(kind: str, exists: Callable[[Path], bool], check: Callable[[Path], None] | None = None):
    def validate(value: str, info: ValidationInfo) -> str:
        if inputs_checked(info):
            if not exists(Path(value)):
                raise ValueError(f"no such {kind} (fix the path, or use --spec_root/--path_map)")
            if check is not None:
                check(Path(value))
        return value
    return AfterValidator(validate)


def _pose_config_check(path: Path) -> None:
    from bpnet.pose import PoseConfigError, load_pose_config

    try:
        load_pose_config(path)
    except PoseConfigError as exc:
        raise ValueError(str(exc).removeprefix(f"{path}: ")) from None
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:  # not JSON text, not a mapping
        raise ValueError(f"not a pose config JSON ({type(exc).__name__})") from None


SpecPath = Annotated[str, AfterValidator(_resolve_spec_path)]
"""A filesystem path in a spec, resolved through the loader's PathContext."""
InputFile = Annotated[SpecPath, _input("file", Path.is_file)]
"""A spec path naming a file the user supplies (checked to exist when the context asks)."""
InputDir = Annotated[SpecPath, _input("folder", Path.is_dir)]
"""A spec path naming a folder the user supplies (checked to exist when the context asks)."""
CheckpointPath = Annotated[SpecPath, _input("checkpoint", lambda p: p.exists() or Path(f"{p}.index").is_file())]
"""A results folder, a checkpoints folder or a checkpoint prefix (``.../ckpt-5``) to start from."""
PoseConfigFile = Annotated[SpecPath, _input("file", Path.is_file, _pose_config_check)]
InputShape = Annotated[tuple[int, int], AfterValidator(check_input_shape)]
"""A network input (height, width), checked by check_input_shape."""
"""The pose config: it must exist and describe a usable skeleton (bpnet.pose)."""
