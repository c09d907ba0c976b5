"""data_version: what identifies the data behind ``dataset_uri`` right now (an uncached step)."""


def data_version(dataset_uri: str, requested: str) -> str:
    """``requested`` if set, else a fingerprint of the data's listing (names, sizes, etags).

    This step never caches, and its output keys dataset_convert's cache: the same data reuses a
    conversion, changed data (e.g. new images behind the same URI, picked up by a scheduled run)
    gets a fresh one. Computed in the pod, so it sees the cluster's MinIO and the run's time.
    """
    from components import runtime

    return runtime.data_version(dataset_uri, requested)
