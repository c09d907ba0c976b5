"""resolve_specs: the run's typed parameters laid over its specs, checked before any work starts."""

from typing import NamedTuple


def resolve_specs(train_spec: str, retrain_spec: str, inference_spec: str, prune_settings: str,
                  export_settings: str, spec_min_ap: float, target_names: list,
                  num_epoch: int, batch_size: int, base_learning_rate: float, input_height: int, input_width: int,
                  pruning_threshold: float, min_ap: float, engine_targets: str
                  ) -> NamedTuple("Resolved", [("overrides", str), ("min_ap", float), ("engine_targets", list)]):
    """Every spec with the set run parameters (``bpnet.overrides``: ``num_epoch`` ... ``engine_targets``,
    each at its unset value keeping the spec's) laid over it, checked before any work. Returns the
    set parameters as JSON (each later step lays them over its own spec), the gate's minimum
    (``spec_min_ap`` unless ``min_ap`` is set) and the names of the engine targets to build (of the
    run spec's ``target_names``). A bad value fails this first step with a message naming it."""
    values = dict(locals())  # the parameters, by name: the override fields and spec names are declared elsewhere
    from collections import namedtuple

    from bpnet.overrides import RunOverrides
    from components import runtime

    overrides = RunOverrides(**{name: values[name] for name in RunOverrides.model_fields})
    result = namedtuple("Resolved", ["overrides", "min_ap", "engine_targets"])
    return result(*runtime.resolve_specs({name: values[name] for name in runtime.SPEC_PARAMETERS}, overrides,
                                         spec_min_ap, target_names))
