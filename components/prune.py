"""prune: Model -> narrower Model (``bpnet prune``), with its report and FLOPs before/after."""

from kfp.dsl import Input, Model, Output


def prune(model: Input[Model], prune_settings: str, inference_spec: str, overrides: str, pruned: Output[Model]):
    """Run ``bpnet prune`` on ``model`` with ``prune_settings`` (``PruneSettings`` as JSON: the
    ``bpnet prune`` flags by their long names) and the run parameters ``overrides`` (JSON) laid
    over. FLOPs are counted at ``inference_spec``'s input shape."""
    from components import runtime

    with runtime.timed(pruned.metadata):
        pruned.metadata.update(runtime.prune(model.path, prune_settings, inference_spec, pruned.path,
                                                     overrides))
