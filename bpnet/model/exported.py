"""The exported model file (``.etlt`` / ``.onnx``): an ONNX graph, encrypted like model files when
a key is given, that describes itself in ONNX metadata.

The graph has one input, ``input_1`` (N, H, W, 3) float32 with a dynamic batch, and the heatmap
and PAF outputs of one stage (the last by default), named ``heatmap_out`` and ``paf_out``. The
metadata records the input size, the stage, the precision, whether the file is the
SDK-compatible deployable model (PAFs upsampled for DeepStream; for deployment only) and the
skeleton (the pose config JSON: a file exported before skeletons were recorded is the default).

This is the format both sides agree on: ``bpnet.deploy`` writes it (export, INT8 QDQ), and
``bpnet.infer`` reads it (the ONNX Runtime backend), so neither imports the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bpnet.artifacts import atomic_write_bytes
from bpnet.crypto import MAGIC, decrypt, encrypt
from bpnet.errors import ModelError
from bpnet.pose import BPNET_SKELETON, Skeleton, skeleton_from_json

INPUT_NAME = "input_1"
HEAT_NAME, PAF_NAME = "heatmap_out", "paf_out"
META_PREFIX = "bpnet."


@dataclass(frozen=True)
class ExportInfo:
    """What an exported file says about itself (ONNX metadata)."""

    height: int
    width: int
    stage: int
    stages: int
    sdk_compatible: bool
    precision: str = "fp32"  # fp32 | int8 (QDQ)
    skeleton: Skeleton = BPNET_SKELETON

    def props(self) -> dict[str, str]:
        return {f"{META_PREFIX}{k}": v.to_json() if isinstance(v, Skeleton) else str(v)
                for k, v in self.__dict__.items()}

    @classmethod
    def from_props(cls, props: dict[str, str], where: str) -> ExportInfo:
        try:
            return cls(height=int(props["bpnet.height"]), width=int(props["bpnet.width"]),
                       stage=int(props["bpnet.stage"]), stages=int(props["bpnet.stages"]),
                       sdk_compatible=props["bpnet.sdk_compatible"] == "True",
                       precision=props.get("bpnet.precision", "fp32"),
                       skeleton=skeleton_from_json(props["bpnet.skeleton"], f"{where}: bpnet.skeleton")
                       if "bpnet.skeleton" in props else BPNET_SKELETON)
        except KeyError as exc:
            raise ModelError(f"{where}: not an ONNX model exported by bpnet (no {exc.args[0]} metadata)") from None


def set_metadata(proto, info: ExportInfo) -> None:
    """Replace the ``bpnet.*`` metadata of an ONNX ModelProto, keeping any other entries."""
    keep = [p for p in proto.metadata_props if not p.key.startswith(META_PREFIX)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in info.props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def write_exported(proto, path: str | Path, key: str | None) -> Path:
    """Serialize (and encrypt with ``key``, as model files are) atomically."""
    data = proto.SerializeToString()
    atomic_write_bytes(path, encrypt(data, key) if key else data)
    return Path(path)


def read_exported(path: str | Path, key: str | None) -> tuple[bytes, ExportInfo]:
    """The ONNX bytes of an exported file (decrypted) and its metadata."""
    import onnx

    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read exported model: {exc.strerror}") from exc
    data = decrypt(blob, key, str(path)) if blob.startswith(MAGIC) else blob
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # onnx raises DecodeError subclasses without a common public base
        raise ModelError(f"{path}: not an ONNX model ({type(exc).__name__})") from None
    return data, ExportInfo.from_props({p.key: p.value for p in proto.metadata_props}, str(path))
