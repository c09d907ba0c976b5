"""Reading spec files, turning validation failures into one line per problem, writing them back.

This is the one place specs are loaded. A bad spec raises ``SpecError`` whose lines read
``spec error: <file>: <dotted.field.path>: <value> — <what was expected>``; the CLI prints them
and exits with code 2 before any work starts.

Parsing is strict and bounded, because a spec is input from outside: the file must be UTF-8 and
at most ``MAX_SPEC_BYTES``; a YAML key given twice is an error (not "last one wins"); nesting is
at most ``MAX_DEPTH`` levels and anchors/aliases may expand to at most ``MAX_NODES`` nodes (a
"billion laughs" spec is refused after a few thousand node visits, not after gigabytes). Values in
messages are formatted piece by piece and cut at ``_MAX_VALUE_CHARS``: nothing larger than what
is printed is ever serialized.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, Tag, ValidationError

from bpnet.artifacts import atomic_write_text
from bpnet.errors import SpecError, UsageError
from bpnet.specs.base import CrossFieldError, PathContext, parse_path_map

T = TypeVar("T", bound=BaseModel)

MAX_SPEC_BYTES = 1 << 20
"""The largest spec file read (the biggest shipped spec is about 4 KB)."""
MAX_DEPTH = 32
"""Deepest nesting of mappings/lists (the shipped specs nest 6 levels)."""
MAX_NODES = 100_000
"""Most YAML nodes a spec may hold once its aliases are expanded."""
_MAX_VALUE_CHARS = 80
_MAX_EXPECTED_CHARS = 240
_MAX_ERROR_LINES = 50


def default_path_context(spec_file: str | Path, root: str | Path | None = None,
                         path_map: list[str] | None = None, check_inputs: bool = False) -> PathContext:
    """Relative paths resolve against ``root`` (else $BPNET_SPEC_ROOT, else the spec's folder);
    absolute prefixes are remapped by ``path_map`` entries, then $BPNET_PATH_MAP entries.
    ``check_inputs`` makes input files/folders named by the spec checked to exist."""
    chosen_root = root or os.environ.get("BPNET_SPEC_ROOT") or Path(spec_file).absolute().parent
    pairs = parse_path_map(path_map) + parse_path_map(os.environ.get("BPNET_PATH_MAP"))
    return PathContext(root=Path(chosen_root).absolute(), path_map=pairs, check_inputs=check_inputs)


class _SpecYamlError(yaml.YAMLError):
    """A spec-specific YAML refusal (duplicate key, too deep, too many nodes) with its line."""

    def __init__(self, problem: str, mark: yaml.Mark | None, expected: str):
        super().__init__(problem)
        self.problem, self.problem_mark, self.expected = problem, mark, expected


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader with duplicate keys refused and nesting/alias expansion bounded."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _SpecYamlError(f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark,
                                     f"at most {MAX_DEPTH} levels of mappings/lists")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _check_expanded_size(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # keys merged in (<<: *base) may be overridden: that is what merging is for
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:
                    continue  # an unhashable key: the base class reports it
                if first is not key_node.start_mark:
                    raise _SpecYamlError(f"duplicate key {_fmt_value(key)} (first given on line "
                                         f"{first.line + 1})", key_node.start_mark, "each key once per mapping")
        return super().construct_mapping(node, deep=deep)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_expanded_size(root: yaml.Node) -> None:
    """Count nodes as if every alias were copied out, without copying (memoized per node);
    an alias inside its own anchor (a cycle) is refused as well."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            open_nodes.discard(id(node))
            size = 1 + sum(sizes[id(c)] for c in _children(node))
            if size > MAX_NODES:
                raise _SpecYamlError(f"more than {MAX_NODES} values once anchors/aliases are expanded",
                                     node.start_mark, "a spec of ordinary size (fewer aliases)")
            sizes[id(node)] = size
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_nodes:
            raise _SpecYamlError("an alias refers to the anchor it is inside (a recursive value)", node.start_mark,
                                 "aliases only to anchors already complete")
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)


def _json_object(pairs: list[tuple[str, Any]]) -> dict:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"duplicate key {_fmt_value(key)}")
        data[key] = value
    return data


def _check_depth(data: Any) -> None:
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))


def read_spec_data(path: str | Path) -> Any:
    """Parse a YAML or JSON spec file (JSON is YAML, but JSON errors read better from json)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError([f"spec error: {path}: -: {exc.strerror or exc} — a readable spec file"]) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError([f"spec error: {path}: -: larger than {MAX_SPEC_BYTES} bytes — a spec file (YAML/JSON text)"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([f"spec error: {path}: byte {exc.start}: not UTF-8 text — a YAML/JSON spec file"]) from None
    try:
        if path.suffix == ".json":
            data = json.loads(text, object_pairs_hook=_json_object)
            _check_depth(data)
            return data
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except json.JSONDecodeError as exc:
        raise SpecError([f"spec error: {path}: line {exc.lineno}: {exc.msg} — valid JSON"]) from None
    except yaml.reader.ReaderError as exc:  # a control character: YAML text excludes them
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise SpecError([f"spec error: {path}: line {line}: character #x{char:04x} — printable text (valid YAML)"]) \
            from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "-"
        expected = getattr(exc, "expected", "valid YAML")
        raise SpecError([f"spec error: {path}: {where}: {getattr(exc, 'problem', exc)} — {expected}"]) from None
    except RecursionError:  # json's decoder recurses per level: far too deep for a spec
        raise SpecError([f"spec error: {path}: -: nested deeper than {MAX_DEPTH} levels — "
                         f"at most {MAX_DEPTH} levels of objects/arrays"]) from None
    except ValueError as exc:  # a duplicate/too deep JSON key, a number too long to convert
        raise SpecError([f"spec error: {path}: -: {_short_text(str(exc))} — a valid spec file"]) from None


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
        errors = exc.errors()
        lines = [_format_error(path, model, err) for err in errors[:_MAX_ERROR_LINES]]
        if len(errors) > _MAX_ERROR_LINES:
            lines.append(f"spec error: {path}: -: {len(errors) - _MAX_ERROR_LINES} more problems — not listed")
        raise SpecError(lines) from None


def spec_mapping(text: str, name: str) -> dict[str, Any]:
    """A spec passed as text (a pipeline parameter: YAML or JSON) as a mapping. JSON is tried
    first: PyYAML reads a JSON number such as 2e-05 as a string (YAML 1.1 floats need a dot)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"not valid YAML/JSON ({exc})", field=f"{name} parameter") from None
    if not isinstance(data, dict):
        raise UsageError(f"expected a mapping of spec fields, got {type(data).__name__}", field=f"{name} parameter")
    return data


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
    """JSON-like text of ``value``, cut at _MAX_VALUE_CHARS; built piece by piece so that a huge
    (or alias-shared) value costs no more than what is printed."""
    out, size = [], 0
    for piece in _pieces(value, depth=0):
        out.append(piece)
        size += len(piece)
        if size > _MAX_VALUE_CHARS:
            break
    return _short_text("".join(out))


def _short_text(text: str) -> str:
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def _pieces(value: Any, depth: int) -> Iterator[str]:
    if depth > MAX_DEPTH:
        yield "..."
    elif isinstance(value, dict):
        yield "{"
        for i, (key, item) in enumerate(value.items()):
            yield (", " if i else "") + _scalar(str(key)) + ": "
            yield from _pieces(item, depth + 1)
        yield "}"
    elif isinstance(value, list | tuple):
        yield "["
        for i, item in enumerate(value):
            if i:
                yield ", "
            yield from _pieces(item, depth + 1)
        yield "]"
    else:
        yield _scalar(value)


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value[: _MAX_VALUE_CHARS + 1])
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float) and not math.isfinite(value):
        return {math.inf: ".inf", -math.inf: "-.inf"}.get(value, ".nan")
    if isinstance(value, int) and abs(value) >= 10 ** (_MAX_VALUE_CHARS + 1):
        return f"<an integer of {value.bit_length()} bits>"  # str() of it would be slow and unprintable
    if isinstance(value, int | float):
        return repr(value)
    return _short_text(repr(value) if not isinstance(value, bytes | bytearray) else f"<{len(value)} bytes>")


def _format_error(path: str | Path, model: type[BaseModel], err: dict) -> str:
    dotted, value, expected = problem(model, err)
    return f"spec error: {path}: {dotted}: {value} — {expected}"


def problem(model: type[BaseModel], err: dict) -> tuple[str, str, str]:
    """One pydantic error of ``model`` as (dotted field path, value as shown, what was expected):
    the same words for a spec file, a command-line flag and a pipeline parameter."""
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
        cross = (err.get("ctx") or {}).get("error")
        if isinstance(cross, CrossFieldError) and cross.fields:
            # name the blamed field and show its value, not the whole section
            dotted = ".".join(str(p) for p in (*loc, cross.fields[0]))
            value = _fmt_value(cross.value if cross.has_value else _lookup(err.get("input"), cross.fields[0]))
        elif isinstance(err.get("input"), dict):
            value = f"<section of {len(err['input'])} keys>"
        msg = str(err.get("msg", ""))
        if len(msg) > _MAX_EXPECTED_CHARS:  # messages may quote user input
            msg = msg[: _MAX_EXPECTED_CHARS - 3] + "..."
        for prefix in ("Input should be ", "Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                msg = ("expected " if prefix == "Input should be " else "") + msg[len(prefix):]
        expected = msg
    if len(dotted) > _MAX_EXPECTED_CHARS:  # a key may be user text of any length
        dotted = dotted[: _MAX_EXPECTED_CHARS - 3] + "..."
    return dotted, value, expected


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


def _lookup(section: Any, dotted: str) -> Any:
    """The value at ``dotted`` (e.g. ``pose_config.target_shape``) of a section as written."""
    for part in dotted.split("."):
        if not isinstance(section, dict) or part not in section:
            return "<default>"
        section = section[part]
    return section


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
