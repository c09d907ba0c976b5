"""resolve_specs: the run's typed parameters laid over its specs, checked before any work starts."""

from typing import NamedTuple


def resolve_specs(train_spec: str, retrain_spec: str, inference_spec: str, prune_settings: str,
                  export_settings: str, spec_min_ap: float, gpu_targets: list, jetson_targets: list,
                  num_epoch: int, batch_size: int, base_learning_rate: float, input_height: int, input_width: int,
                  pruning_threshold: float, min_ap: float, engine_targets: str
                  ) -> NamedTuple("Resolved", [("train_spec", str), ("retrain_spec", str), ("inference_spec", str),
                                               ("prune_settings", str), ("export_settings", str), ("min_ap", float),
                                               ("gpu_targets", list), ("jetson_targets", list)]):
    """The specs every later step reads, with the set run parameters (``bpnet.overrides``:
    ``num_epoch`` ... ``engine_targets``, each at its unset value keeping the spec's) laid over
    them; the gate's minimum (``spec_min_ap`` unless ``min_ap`` is set) and the engine targets to
    build. A bad value fails this first step with a message naming the parameter."""
    values = dict(locals())  # the parameters, by name: the override fields and spec names are declared elsewhere
    from collections import namedtuple

    from bpnet.overrides import RunOverrides
    from components import runtime

    overrides = RunOverrides(**{name: values[name] for name in RunOverrides.model_fields})
    texts, gate, targets = runtime.resolve_specs({name: values[name] for name in runtime.SPEC_PARAMETERS}, overrides,
                                                 spec_min_ap, {"gpu": gpu_targets, "jetson": jetson_targets})
    result = namedtuple("Resolved", [*texts, "min_ap", "gpu_targets", "jetson_targets"])
    return result(**texts, min_ap=gate, gpu_targets=targets["gpu"], jetson_targets=targets["jetson"])
