"""dataset_convert: raw COCO dataset (MinIO prefix or folder) -> train and val Dataset artifacts."""

from kfp.dsl import Dataset, Output


def dataset_convert(dataset_uri: str, data_version: str, dataset_spec: str, train_data: Output[Dataset],
                    val_data: Output[Dataset], generate_masks: bool, num_shards: int):
    """Fetch ``dataset_uri`` through bpnet.storage and run ``bpnet dataset_convert`` on both splits.

    ``generate_masks`` and ``num_shards`` are ``bpnet.settings.ConvertSettings``' (the run spec's
    ``dataset`` section gives them). ``data_version`` is not read: it is part of the cache key (see
    data_version), so new data behind the same URI is never served a cached conversion.
    ``dataset_spec`` is the JSON text of the dataset spec; its ``root_directory_path`` is replaced
    by the fetched copy. Each split goes to its own artifact, so evaluation pods download the val
    split only.
    """
    from components import runtime

    train_data.metadata["data_version"] = data_version
    with runtime.timed(train_data.metadata):
        summary = runtime.dataset_convert(dataset_uri, dataset_spec, train_data.path, val_data.path,
                                          generate_masks, num_shards)
    train_data.metadata.update(summary)
    val_data.metadata.update(data_version=data_version, source=dataset_uri, images=summary["val_images"])
