"""Shared machinery of every spec model: strictness, ``__class_name__`` keys and spec paths.

Spec models reject unknown keys (they are usually typos; the loader turns the rejection into a
"did you mean" line). Fields that hold filesystem paths are typed ``SpecPath`` so that they are
resolved in exactly one way: relative to a root the user can override, and with absolute
prefixes (the guide's ``/workspace/...``) remappable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo


class SpecModel(BaseModel):
    """Base of all spec sections: unknown keys are errors, assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


@dataclass(frozen=True)
class PathContext:
    """How spec paths are resolved.

    root: relative paths are joined to it (default: the directory holding the spec file).
    path_map: (old_prefix, new_prefix) pairs applied to absolute paths, first match wins; this is
    how the guide's ``/workspace/...`` paths are remapped without editing the spec.
    """

    root: Path | None = None
    path_map: tuple[tuple[str, str], ...] = field(default_factory=tuple)

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
            raise ValueError(f"path map entry '{item}' — expected OLD_PREFIX=NEW_PREFIX")
        # A relative target is relative to the working directory, as on any command line.
        pairs.append((old.strip(), os.path.abspath(os.path.expanduser(new.strip()))))
    return tuple(pairs)


def _resolve_spec_path(value: str, info: ValidationInfo) -> str:
    ctx = (info.context or {}).get("paths") if info.context else None
    return ctx.resolve(value) if isinstance(ctx, PathContext) else value


SpecPath = Annotated[str, AfterValidator(_resolve_spec_path)]
"""A filesystem path in a spec, resolved through the loader's PathContext."""
