"""prune: Model -> narrower Model (``bpnet prune``), with its report and FLOPs before/after."""

from kfp.dsl import Input, Model, Output


def prune(model: Input[Model], prune_settings: str, inference_spec: str, pruned: Output[Model]):
    """Run ``bpnet prune`` on ``model`` with ``prune_settings`` (JSON: the ``bpnet prune`` flags by
    their long names). FLOPs are counted at ``inference_spec``'s input shape."""
    from components import runtime

    with runtime.timed(pruned.metadata):
        pruned.metadata.update(runtime.prune(model.path, prune_settings, inference_spec, pruned.path))
