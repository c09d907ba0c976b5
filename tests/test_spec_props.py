"""Property-based: any mutation of a shipped spec either loads as a sane spec or is a spec error.

The shipped specs (specs/, specs/demo/, specs/pipeline/) are mutated — values replaced by other
types, NaN/inf, huge or negative numbers, keys deleted or added, sections wrapped in lists, lines
duplicated (duplicate keys), alias bombs appended — and loaded. The promise checked: the loader
raises ``SpecError`` (never another exception) whose every line is ``spec error: <file>: ...`` and
short, or it returns a spec whose floats are all finite and which survives a round trip through
its resolved form. Deterministic (``derandomize``); the default profile runs in seconds, the
``slow`` one (``make test-all``) tries 25 times as many cases.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from bpnet.artifacts import ArtifactError, check_layout
from bpnet.specs import DatasetSpec, InferenceSpec, SpecError, TrainSpec, load_spec, spec_to_dict
from bpnet.specs.loader import _fmt_value
from pipelines.run_spec import RunSpec
from tests.conftest import REPO

SHIPPED: list[tuple[str, type[BaseModel]]] = [
    ("specs/coco_spec.json", DatasetSpec),
    ("specs/bpnet_train_m1_coco.yaml", TrainSpec),
    ("specs/bpnet_retrain_m1_coco.yaml", TrainSpec),
    ("specs/infer_spec.yaml", InferenceSpec),
    ("specs/demo/bpnet_train_demo.yaml", TrainSpec),
    ("specs/demo/bpnet_retrain_demo.yaml", TrainSpec),
    ("specs/demo/infer_spec_demo.yaml", InferenceSpec),
    ("specs/pipeline/local.yaml", RunSpec),
    ("specs/pipeline/cluster.yaml", RunSpec),
]
FAST = settings(derandomize=True, max_examples=120, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LONG = settings(FAST, max_examples=3000)
MAX_LINE = 600
ALIAS_BOMB = "".join(f"z{i}: &z{i} [{', '.join([f'*z{i - 1}'] * 9) if i else '0, 0, 0'}]\n" for i in range(8))

WORK = Path(tempfile.mkdtemp(prefix="spec-props-"))

odd_values = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from([10**12, 1.0e12, -1, 0, 2**63, 1e308, -0.0, "lots", "", ".nan", "1e12", "/nowhere", [], {}]),
    st.lists(st.integers(min_value=-5, max_value=5) | st.booleans() | st.floats(), max_size=4),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
mutation = st.tuples(st.integers(min_value=0), st.sampled_from(["replace", "delete", "extra", "wrap"]), odd_values)
cases = st.tuples(
    st.sampled_from(range(len(SHIPPED))),
    st.lists(mutation, min_size=1, max_size=3),
    st.sampled_from(["none", "duplicate_line", "alias_bomb"]),
    st.integers(min_value=0),
)


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key/index path in a spec tree, sections first (a deterministic order)."""
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for key in data:
            out += _paths(data[key], (*prefix, key))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            out += _paths(item, (*prefix, i))
    return out


def _mutate(data: Any, index: int, op: str, value: Any) -> None:
    paths = _paths(data)
    if not paths:
        return
    path = paths[index % len(paths)]
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if op == "replace":
        parent[last] = value
    elif op == "delete":
        parent.pop(last)
    elif op == "wrap":
        parent[last] = [parent[last]]
    elif isinstance(parent, dict):
        parent[f"{last}_extra"] = value
    else:
        parent.append(value)


def _text(data: Any, suffix: str, text_op: str, line_pick: int) -> str:
    if suffix == ".json":
        return json.dumps(data)
    text = yaml.safe_dump(data, sort_keys=False)
    if text_op == "duplicate_line":
        lines = text.splitlines(keepends=True)
        pick = line_pick % len(lines)
        lines.insert(pick, lines[pick])
        text = "".join(lines)
    elif text_op == "alias_bomb" and isinstance(data, dict):
        text += ALIAS_BOMB
    return text


def _all_floats_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_floats_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_all_floats_finite(v) for v in value)
    return True


def check_case(case: tuple) -> None:
    which, mutations, text_op, line_pick = case
    name, model = SHIPPED[which]
    source = REPO / name
    data = json.loads(source.read_text()) if source.suffix == ".json" else yaml.safe_load(source.read_text())
    for index, op, value in mutations:
        _mutate(data, index, op, value)
    path = WORK / f"spec{source.suffix}"
    try:
        text = _text(data, source.suffix, text_op, line_pick)
    except (ValueError, OverflowError):  # json cannot write some values (e.g. keys of mixed types)
        return
    path.write_text(text)
    try:
        spec = load_spec(path, model)
    except SpecError as exc:
        assert exc.lines
        for line in exc.lines:
            assert line.startswith(f"spec error: {path}: "), line
            assert len(line) <= MAX_LINE and "\n" not in line, line
        return
    dumped = spec_to_dict(spec)
    assert _all_floats_finite(dumped)
    assert text_op != "alias_bomb"  # 8^9 values must never load
    again = WORK / "again.json"
    again.write_text(json.dumps(dumped))
    assert load_spec(again, model) == spec  # a resolved spec is itself a valid spec


@FAST
@given(cases)
def test_mutated_shipped_specs_load_or_fail_cleanly(case):
    check_case(case)


@pytest.mark.slow
@LONG
@given(cases)
def test_mutated_shipped_specs_long_profile(case):
    check_case(case)


nested = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=120),
                      lambda inner: st.lists(inner, max_size=10) | st.dictionaries(st.text(max_size=10), inner,
                                                                                  max_size=10),
                      max_leaves=40)


@settings(FAST, max_examples=60)
@given(nested)
def test_value_formatting_is_bounded(value):
    assert len(_fmt_value(value)) <= 80


@FAST
@given(st.lists(st.text(alphabet="ab/.", min_size=1, max_size=6), max_size=8))
def test_storage_layout_is_unique_and_prefix_free_or_refused(paths):
    try:
        layout = check_layout(paths, "here")
    except ArtifactError as exc:
        assert str(exc).startswith(("here: ", "unsafe artifact path"))
        return
    assert len(set(layout)) == len(layout)
    files = set(layout)
    assert not any("/".join(p.split("/")[:i]) in files for p in layout for i in range(1, p.count("/") + 1))


def test_spec_fuzz_target_on_a_fixed_budget_of_inputs():
    """The first inputs of ``make fuzz``'s spec target (shipped specs, then mutations): no failure."""
    from itertools import islice

    from tests.fuzz.fuzz_specs import fuzz_one, generate, run

    stats = run(fuzz_one, islice(generate(seed=7), 300))
    assert stats.inputs == 300 and stats.failures == 0
