"""publish: a promoted model's release (models, calibration, metrics, specs, serving configs,
model card) under a release root, and ``latest`` moved to it if the promotion rule holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bpnet.release import RELEASE_INT8_VERDICT, ReleaseInputs, ReleaseServing, assemble_and_publish
from bpnet.specs import InferenceSpec
from bpnet.steps._common import model_key


@dataclass(frozen=True)
class Released:
    release: str
    uri: str
    promoted: bool
    reason: str
    pointer: dict[str, Any]  # what latest.json holds (or would, when not promoted)


def publish(release_root: str, inputs: ReleaseInputs, evaluations: dict[str, dict], data: dict[str, Any],
            settings: dict[str, Any], decoder: InferenceSpec, serving: ReleaseServing,
            int8_verdict: str = RELEASE_INT8_VERDICT, min_ap: float = 0.0, key: str | None = None) -> Released:
    """Publish the release of ``inputs``; ``evaluations`` are the figures per model label."""
    pointer = assemble_and_publish(release_root, inputs, evaluations, data, settings, decoder, serving, int8_verdict,
                                   min_ap, model_key(key, required=False))
    return Released(pointer["release"], pointer["uri"], pointer["promoted"], pointer["reason"], pointer)
