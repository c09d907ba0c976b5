"""build_engine: a TensorRT engine for one target (GPU pool or Jetson), from the exported model."""

from kfp.dsl import Input, Model, Output


def build_engine(exported: Input[Model], int8: Input[Model], target: dict, workspace_bytes: int,
                 engine: Output[Model]):
    """Run ``bpnet build_engine`` (TensorRT, on the node it will run on) for ``target`` (one of the
    run spec's engine targets, ``bpnet.settings.EngineTarget`` as JSON: serves triton = the standard
    export, deepstream = the SDK-compatible one); INT8 uses the matching calibration cache.
    Engines are specific to the GPU and TensorRT version."""
    from components import runtime

    with runtime.timed(engine.metadata):
        engine.metadata.update(runtime.build_engine(exported.path, int8.path, target, workspace_bytes, engine.path))
