"""publish: the promoted model's release (models, calibration, metrics, specs, serving configs,
model card).

The step takes one Metrics input per evaluated model, so its signature follows the pipeline's
declaration of what it evaluates (``pipelines.outputs.EVALUATED``): ``publish_component`` writes
that signature (kfp reads a component's inputs from its function's signature, and ships the
function's source into the pod) around one call to ``release``, which does the work.
"""

import linecache
from collections.abc import Callable, Mapping
from typing import Any

_SOURCE = '''def publish(release_root: str, trained: Input[Model], retrained: Input[Model], exported: Input[Model],
            int8: Input[Model], dataset_uri: str, data_version: str, prune_settings: str, export_settings: str,
            inference_spec: str, serving: str, int8_verdict: str, min_ap: float, overrides: str,
            {metrics}gpu_engines: Input[List[Model]] = None, jetson_engines: Input[List[Model]] = None) -> str:
    """Publish ``<release_root>/<release_id>/`` and move ``latest`` to it (components.publish.release)."""
    from components.publish import release

    return release(dict(locals()), {labels!r})
'''


def publish_component(evaluated: Mapping[str, str]) -> Callable[..., str]:
    """The publish function for these evaluations (Metrics input name -> the model's label): a
    ``metrics_*`` input per evaluated model beside the fixed ones. Its source is registered with
    ``linecache``, where ``inspect.getsource`` (what kfp ships into the pod) finds it."""
    from kfp.dsl import Input, Metrics, Model

    source = _SOURCE.format(metrics="".join(f"{name}: Input[Metrics], " for name in evaluated),
                            labels=dict(evaluated))
    filename = f"<bpnet publish: {', '.join(evaluated.values())}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace = {"Input": Input, "Metrics": Metrics, "Model": Model, "List": list}
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - our own template, names from the declaration
    return namespace["publish"]


def release(inputs: dict[str, Any], evaluated: Mapping[str, str]) -> str:
    """What the publish step does with its inputs: the release of the Model artifacts through
    bpnet.storage, ``latest`` moved to it only after it is complete (engines included) and only if
    the promotion rule still holds then. ``int8_verdict`` is the INT8 gate's; ``serving`` the run
    spec's serving options (JSON). Returns the release id."""
    from bpnet.release import RETRAINED
    from components import runtime

    evaluations = {label: dict(inputs[name].metadata) for name, label in evaluated.items()}
    evaluations[RETRAINED]["parameters"] = inputs["retrained"].metadata.get("parameters")
    engines = [*(inputs["gpu_engines"] or []), *(inputs["jetson_engines"] or [])]
    pointer = runtime.publish(inputs["release_root"], inputs["trained"].path, inputs["retrained"].path,
                              inputs["exported"].path, inputs["int8"].path, evaluations,
                              {"dataset_uri": inputs["dataset_uri"], "data_version": inputs["data_version"]},
                              {role: runtime.spec_for(role, inputs[f"{role}_settings"], inputs["overrides"],
                                                      f"{role}_settings") for role in ("prune", "export")},
                              [e.path for e in engines], inputs["inference_spec"], inputs["serving"],
                              inputs["int8_verdict"], inputs["min_ap"], inputs["overrides"])
    return pointer["release"]
