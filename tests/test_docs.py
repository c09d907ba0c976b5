"""The generated CLI reference is current (regenerate with `python tools/cli_docs.py`)."""

from __future__ import annotations

import importlib.util

from tests.conftest import REPO


def _tool():
    spec = importlib.util.spec_from_file_location("cli_docs", REPO / "tools" / "cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_current() -> None:
    tool = _tool()
    assert tool.OUT.read_text() == tool.render(), "docs/cli.md is stale: run `python tools/cli_docs.py`"


def test_cli_reference_names_every_sub_command_and_flag() -> None:
    text = _tool().render()
    for needle in ("## `bpnet train`", "## `bpnet dataset_convert`", "`-e`, `--experiment_spec_file`",
                   "`--log_level`"):
        assert needle in text


def test_pipeline_md_documents_every_run_parameter_with_its_unset_value() -> None:
    from bpnet.overrides import RunOverrides

    text = (REPO / "docs" / "pipeline.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `")}
    for name, field in RunOverrides.model_fields.items():
        row = next((line for key, line in rows.items() if f"`{name}`" in key), None)
        assert row is not None, name
        assert f"`{field.default!r}`".replace("'", '"') in row, (name, row)
