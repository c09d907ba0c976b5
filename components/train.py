"""train: Dataset artifact + train spec -> Model artifact (the bpnet train results folder)."""

from kfp.dsl import Dataset, Input, Model, Output


def train(train_data: Input[Dataset], val_data: Input[Dataset], train_spec: str, pose_config: str,
          model: Output[Model], gpus: int, overrides: str, warm_start: str = ""):
    """Run ``bpnet train`` with the spec's data paths bound to ``train_data`` (``val_data``: the
    learning curve's AP images).

    ``train_spec`` is the YAML text of the train spec, ``pose_config`` the JSON text of the file its
    ``pose_config_path`` named (empty: keep that path). ``warm_start`` (a release root) starts from
    the latest release's model when one exists. ``overrides``: the run parameters resolve_specs
    checked (JSON), laid over the spec. The model key comes from $BPNET_MODEL_KEY.
    """
    from components import runtime

    with runtime.timed(model.metadata):
        model.metadata.update(runtime.train(train_data.path, train_spec, pose_config, model.path, gpus,
                                            warm_start=warm_start, val_dir=val_data.path, overrides=overrides))
