"""The generated references are current (regenerate with `make docs`), and the hand-written docs
name what the code has."""

from __future__ import annotations

import importlib.util
import re

import pytest

from tests.conftest import REPO


def _tool(name: str = "cli_docs"):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["cli_docs", "run_spec_docs"])
def test_generated_references_are_current(name) -> None:
    tool = _tool(name)
    assert tool.OUT.read_text() == tool.render(), f"{tool.OUT.name} is stale: run `make docs`"


def test_cli_reference_names_every_sub_command_and_flag() -> None:
    text = _tool().render()
    for needle in ("## `bpnet train`", "## `bpnet dataset_convert`", "`-e`, `--experiment_spec_file`",
                   "`--log_level`"):
        assert needle in text


def test_the_run_spec_reference_has_every_field_and_run_parameter() -> None:
    from bpnet.overrides import RunOverrides
    from pipelines.run_spec import RunSpec, Steps

    text = _tool("run_spec_docs").render()
    rows = [line.split("|")[1].strip().strip("`") for line in text.splitlines() if line.startswith("| `")]
    assert {"kfp.host", "engines.targets[].max_batch_size", "gpu.jetson_pool.tolerations[].key",
            "export.cal_method", "prune.pruning_threshold"} <= set(rows)
    assert set(RunSpec.model_fields) <= set(rows) and set(Steps.model_fields) <= set(rows)
    assert set(RunOverrides.model_fields) <= set(rows)
    assert "| `pruning_threshold` | float | `-1.0` |" in text  # its unset value


def test_the_design_layout_names_every_module() -> None:
    """docs/design.md's layout names every module of the packages and tools (a new one must be placed)."""
    layout = (REPO / "docs" / "design.md").read_text().split("```")[1]
    top = ("bpnet", "pipelines", "tools")  # their modules by file name; subpackages' by name (steps/: train ...)
    modules = [p for folder in (*top, "components") for p in sorted((REPO / folder).rglob("*.py"))]
    missing = [str(p.relative_to(REPO)) for p in modules
               if p.name != "__init__.py" and (p.name if p.parent.name in top else p.stem) not in layout]
    assert missing == []


def test_the_docs_link_only_to_files_that_exist() -> None:
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), (page.name, target)


def test_the_readme_stays_a_short_guide() -> None:
    """Reference lives in docs/; the README keeps the two commands, the common tasks and links."""
    assert len((REPO / "README.md").read_text().splitlines()) <= 150
