"""bpnet: an open re-implementation of the TLT BodyPoseNet workflow.

The library is importable without kfp, minio or tensorrt; those are imported lazily by the
modules that need them (storage, engine builds) so a laptop can run and test everything else.
"""

__version__ = "0.1.0"
