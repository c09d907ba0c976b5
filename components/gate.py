"""gate: promote a model only if its AP reaches the minimum and the latest release's AP."""


def gate(ap: float, min_ap: float, release_root: str) -> str:
    """``"promote"``, or ``"hold: <why>"`` (the pipeline publishes under ``dsl.If(... == "promote")``)."""
    from components import runtime

    return runtime.promotion_gate(ap, min_ap, release_root)
