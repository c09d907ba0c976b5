"""retrain: train Dataset + pruned Model + retrain spec -> retrained Model (``load_graph``)."""

from kfp.dsl import Dataset, Input, Model, Output


def retrain(train_data: Input[Dataset], val_data: Input[Dataset], pruned: Input[Model], retrain_spec: str,
            pose_config: str, model: Output[Model], gpus: int, overrides: str):
    """Run ``bpnet train`` with ``pretrained_weights`` = the pruned model and ``load_graph: true``:
    the narrower graph comes from the file, regularization is off unless the spec turns it on.
    ``val_data``: the learning curve's AP images; ``overrides``: the run parameters (JSON)."""
    from components import runtime

    with runtime.timed(model.metadata):
        model.metadata.update(runtime.train(train_data.path, retrain_spec, pose_config, model.path, gpus,
                                            pretrained_dir=pruned.path, val_dir=val_data.path, overrides=overrides,
                                            role="retrain"))
