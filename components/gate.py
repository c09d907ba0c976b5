"""The gates: promote a model only if its AP reaches the minimum and the latest release's AP; the
INT8 quality gate, which decides which engine targets are built."""

from typing import NamedTuple


def promotion_gate(ap: float, min_ap: float, release_root: str) -> str:
    """``"promote"``, or ``"hold: <why>"`` (the pipeline publishes under ``dsl.If(... == "promote")``)."""
    from bpnet import release

    return release.promotion_gate(ap, min_ap, release_root)


def int8_gate(fp32_ap: float, int8_ap: float, max_drop: float, gpu_targets: list, jetson_targets: list,
              chosen: list) -> NamedTuple("Int8Gate", [("verdict", str), ("gpu_targets", list),
                                                        ("jetson_targets", list)]):
    """INT8 engines are built and released only if INT8 AP >= fp32 AP - ``max_drop``: returns
    ``"release int8"`` or ``"hold: <why, both figures, what to try>"`` and the engine targets to
    build: of the run spec's (EngineTarget JSON, per pool) those ``chosen`` (the engine_targets run
    parameter's), INT8 ones dropped on hold; the engine loops iterate over these lists."""
    from collections import namedtuple

    from bpnet import release

    result = namedtuple("Int8Gate", ["verdict", "gpu_targets", "jetson_targets"])
    return result(*release.int8_gate(fp32_ap, int8_ap, max_drop, gpu_targets, jetson_targets, chosen))
