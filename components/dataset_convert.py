"""dataset_convert: raw COCO dataset (MinIO prefix or folder) -> Dataset artifact with TFRecords."""

from kfp.dsl import Dataset, Output


def dataset_convert(dataset_uri: str, data_version: str, dataset_spec: str, dataset: Output[Dataset],
                    generate_masks: bool = True, num_shards: int = 1):
    """Fetch ``dataset_uri`` through bpnet.storage and run ``bpnet dataset_convert`` on both splits.

    ``data_version`` is not read: it is part of the cache key, so that new data behind the same URI
    (or a new scheduled run) is never served a cached conversion. ``dataset_spec`` is the JSON text
    of the dataset spec; its ``root_directory_path`` is replaced by the fetched copy.
    """
    from components import runtime

    dataset.metadata["data_version"] = data_version
    with runtime.timed(dataset.metadata):
        dataset.metadata.update(runtime.dataset_convert(dataset_uri, dataset_spec, dataset.path,
                                                        generate_masks, num_shards))
