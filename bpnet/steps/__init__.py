"""The step layer: one typed function per sub-task, under both the CLI and the pipeline.

Each module holds one step (``dataset_convert``, ``train``, ``prune``, ``export``, ``calibrate``,
``build_engine``, ``evaluate``, ``inference``, ``publish``): it takes the validated spec objects,
its settings model (``bpnet.settings``) and paths, writes its output folder as ``bpnet.layout``
names it, and returns a frozen result dataclass (paths written and the figures worth showing).
It raises ``bpnet.errors.BpnetError`` subclasses whose message is what the user reads.
``bpnet.cli`` and ``components.runtime`` only adapt arguments and results to these functions.
Modules are imported by name (``from bpnet.steps.train import train``): each pulls in only what
its step needs (TensorFlow, ONNX Runtime, pycocotools).
"""
