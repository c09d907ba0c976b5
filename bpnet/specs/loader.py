"""Reading spec files, turning validation failures into one line per problem, writing them back.

This is the one place specs are loaded. A bad spec raises ``SpecError`` whose lines read
``spec error: <file>: <dotted.field.path>: <value> — <what was expected>``; the CLI prints them
and exits with code 2 before any work starts.
"""

from __future__ import annotations

import difflib
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, Tag, ValidationError

from bpnet.artifacts import atomic_write_text
from bpnet.specs.base import PathContext, parse_path_map

T = TypeVar("T", bound=BaseModel)

_MAX_VALUE_CHARS = 80


class SpecError(Exception):
    """One or more problems with a spec file; ``lines`` holds one message per problem."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


def default_path_context(spec_file: str | Path, root: str | Path | None = None,
                         path_map: list[str] | None = None) -> PathContext:
    """Relative paths resolve against ``root`` (else $BPNET_SPEC_ROOT, else the spec's folder);
    absolute prefixes are remapped by ``path_map`` entries, then $BPNET_PATH_MAP entries."""
    chosen_root = root or os.environ.get("BPNET_SPEC_ROOT") or Path(spec_file).absolute().parent
    pairs = parse_path_map(path_map) + parse_path_map(os.environ.get("BPNET_PATH_MAP"))
    return PathContext(root=Path(chosen_root).absolute(), path_map=pairs)


def read_spec_data(path: str | Path) -> Any:
    """Parse a YAML or JSON spec file (JSON is YAML, but JSON errors read better from json)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError([f"spec error: {path}: -: {exc.strerror or exc} — a readable spec file"]) from exc
    try:
        if path.suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise SpecError([f"spec error: {path}: line {exc.lineno}: {exc.msg} — valid JSON"]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "-"
        raise SpecError([f"spec error: {path}: {where}: {getattr(exc, 'problem', exc)} — valid YAML"]) from exc


def load_spec(path: str | Path, model: type[T], paths: PathContext | None = None) -> T:
    """Load and validate ``path`` as ``model``; all problems are reported at once."""
    data = read_spec_data(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError([f"spec error: {path}: -: {_fmt_value(data)} — a mapping of spec fields"])
    context = {"paths": paths or default_path_context(path)}
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise SpecError([_format_error(path, model, err) for err in exc.errors()]) from None


def spec_to_dict(spec: BaseModel) -> dict:
    """The fully resolved spec (defaults filled in, paths resolved), with ``__class_name__`` keys."""
    return spec.model_dump(mode="json", by_alias=True)


def write_resolved_spec(spec: BaseModel, dest: str | Path) -> Path:
    """Write the resolved spec next to a step's outputs, so each result says how it was made."""
    dest = Path(dest)
    data = spec_to_dict(spec)
    if dest.suffix == ".json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        text = yaml.safe_dump(data, sort_keys=False)
    atomic_write_text(dest, text)
    return dest


def _fmt_value(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def _format_error(path: str | Path, model: type[BaseModel], err: dict) -> str:
    raw_loc = tuple(err.get("loc", ()))
    loc = _without_tags(model, raw_loc)
    dotted = ".".join(str(p) for p in loc) or "-"
    kind = err.get("type", "")
    if kind == "missing":
        value, expected = "<missing>", "a value is required"
    elif kind == "extra_forbidden":
        value = _fmt_value(err.get("input"))
        candidates = _keys_at(model, raw_loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), candidates, n=1, cutoff=0.6)
        expected = "unknown key" + (f" (did you mean '{close[0]}'?)" if close else
                                    f"; valid keys here: {', '.join(sorted(candidates))}")
    else:
        value = _fmt_value(err.get("input"))
        msg = str(err.get("msg", ""))
        for prefix in ("Input should be ", "Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                msg = ("expected " if prefix == "Input should be " else "") + msg[len(prefix):]
        expected = msg
    return f"spec error: {path}: {dotted}: {value} — {expected}"


def _tagged_members(annotation: Any) -> dict[str, Any]:
    """A discriminated union's members by tag (``__class_name__``); {} for any other annotation."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return {}
    members = {}
    for member in typing.get_args(annotation):
        if typing.get_origin(member) is typing.Annotated:
            base, *meta = typing.get_args(member)
            members.update({m.tag: base for m in meta if isinstance(m, Tag)})
    return members


def _without_tags(model: type[BaseModel], loc: tuple) -> tuple:
    """``loc`` without the union-tag steps pydantic inserts (they are not keys of the spec)."""
    current: Any = model
    out = []
    for part in loc:
        members = _tagged_members(current)
        if part in members:
            current = members[part]
            continue
        out.append(part)
        current = _unwrap(current, index=isinstance(part, int))
        if isinstance(current, type) and issubclass(current, BaseModel) and not isinstance(part, int):
            field = next((f for n, f in current.model_fields.items() if part in (n, f.alias)), None)
            current = field.annotation if field is not None else None
    return tuple(out)


def _keys_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The valid keys of the spec section at ``loc`` (for "did you mean" suggestions); a union
    member is chosen by the tag step that follows it in pydantic's raw location."""
    current: Any = model
    for part in loc:
        members = _tagged_members(current)
        if part in members:
            current = members[part]
            continue
        current = _unwrap(current, index=isinstance(part, int))
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            if isinstance(part, int):
                continue
            return []
        field = next((f for n, f in current.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return []
        current = field.annotation
    current = _unwrap(current, index=False)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _unwrap(annotation: Any, index: bool) -> Any:
    """Strip Optional/Union and, for an index step, the list element type."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(models[0], index) if models else annotation
    if index and origin in (list, tuple):
        args = typing.get_args(annotation)
        return args[0] if args else annotation
    return annotation
