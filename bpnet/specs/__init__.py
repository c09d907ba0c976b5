"""Spec models (dataset, train, inference) and their one loader."""

from bpnet.specs.base import PathContext, SpecModel, SpecPath
from bpnet.specs.dataset import DatasetSpec
from bpnet.specs.inference import InferenceSpec
from bpnet.specs.loader import SpecError, default_path_context, load_spec, spec_to_dict, write_resolved_spec
from bpnet.specs.train import TrainSpec

__all__ = [
    "DatasetSpec", "InferenceSpec", "PathContext", "SpecError", "SpecModel", "SpecPath", "TrainSpec",
    "default_path_context", "load_spec", "spec_to_dict", "write_resolved_spec",
]
