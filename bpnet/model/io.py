"""Model files: save/load (optionally encrypted with the user's key) and weights by layer name.

A model file is a Keras ``.keras`` archive; with a key it is encrypted by ``bpnet.crypto``
(AES-256-GCM, PBKDF2-HMAC-SHA256 key derivation); a wrong key is reported as such. The
architecture is read back from the layers themselves, so a pruned model reloads with no spec.
The archive also holds the skeleton the model was trained for (``SKELETON_ENTRY``, the pose
config with every declaration), so inference, evaluation, export and release read the joints
from the model; a file without it (written before skeletons were recorded) is the default
18-joint skeleton when its heads have that skeleton's channel counts.
Training checkpoints (tf.train, ``ckpt-<epoch>``) are read back whole before a resume trusts them.
"""

from __future__ import annotations

import io
import logging
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from bpnet.artifacts import atomic_write_bytes
from bpnet.crypto import MAGIC, ModelKeyError, decrypt, encrypt  # noqa: F401 - ModelKeyError: part of this API
from bpnet.errors import ModelError
from bpnet.model.architecture import BACKBONE_LAYERS, C128_CONV, FULL, LITE, Architecture, default_filters
from bpnet.pose import BPNET_SKELETON, Skeleton, skeleton_from_json

log = logging.getLogger(__name__)


def checkpoint_problem(prefix: str | Path) -> str | None:
    """Why the tf.train checkpoint at ``prefix`` cannot be restored, or None when every tensor reads.

    Reading all tensors (CRC-checked) is what catches a truncated or corrupt data file: restoring
    one fails half-way with ``IndexError: Read less bytes than requested`` and may leave deferred
    restores from it behind, so it must be rejected before restore is called.
    """
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(prefix))
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError, OSError) as exc:
        return str(getattr(exc, "message", exc)).strip().splitlines()[0]
    return None


def latest_readable_checkpoint(directory: str | Path, name: str = "ckpt") -> str | None:
    """The newest ``<name>-<n>`` checkpoint in ``directory`` that reads, falling back past bad ones.

    Each unreadable one is logged as a warning naming its files. None when there is no checkpoint;
    a ValueError when there are some and none reads (rather than silently starting over).
    """
    directory = Path(directory)
    numbered = []
    for index in directory.glob(f"{name}-*.index") if directory.is_dir() else []:
        match = re.fullmatch(rf"{re.escape(name)}-(\d+)\.index", index.name)
        if match:
            numbered.append((int(match.group(1)), str(index.with_suffix(""))))
    bad = []
    ordered = sorted(numbered, reverse=True)
    for k, (_, prefix) in enumerate(ordered):
        problem = checkpoint_problem(prefix)
        if problem is None:
            return prefix
        log.warning("checkpoint %s.* is unreadable (%s)%s", prefix, problem,
                    "; falling back to the previous one" if k + 1 < len(ordered) else "")
        bad.append(f"{Path(prefix).name} ({problem})")
    if bad:
        raise ModelError(f"{directory}: no readable checkpoint: {'; '.join(bad)}; move the folder away to start over")
    return None


SKELETON_ENTRY = "bpnet_skeleton.json"  # inside the .keras archive, beside Keras' own entries


def model_bytes(model: keras.Model, skeleton: Skeleton = BPNET_SKELETON) -> bytes:
    """The .keras archive of ``model`` with ``skeleton`` recorded in it."""
    if (skeleton.heat_channels, skeleton.paf_channels) != _head_channels(model):
        raise ModelError(f"the model's heads have {_head_channels(model)} heatmap / PAF channels, the skeleton "
                         f"'{skeleton.name}' needs {skeleton.heat_channels} / {skeleton.paf_channels}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr(SKELETON_ENTRY, skeleton.to_json())
        return path.read_bytes()


def _head_channels(model: keras.Model) -> tuple[int, int]:
    conv = {layer.name: layer for layer in model.layers}
    return conv["heatmap_out"].filters, conv["paf_out"].filters


def save_model(model: keras.Model, path: str | Path, key: str | None = None,
               skeleton: Skeleton = BPNET_SKELETON) -> Path:
    """Save atomically with its skeleton; encrypted when a key is given."""
    data = model_bytes(model, skeleton)
    atomic_write_bytes(path, encrypt(data, key) if key else data)
    return Path(path)


@dataclass(frozen=True)
class ModelFile:
    """A loaded model file: the Keras model and the skeleton it records."""

    model: keras.Model
    skeleton: Skeleton


def open_model(path: str | Path, key: str | None = None, compile: bool = False) -> ModelFile:
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file: {exc.strerror}") from exc
    data = decrypt(blob, key, str(path))
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "model.keras"
        plain.write_bytes(data)
        try:
            model = keras.saving.load_model(plain, compile=compile)
            with zipfile.ZipFile(plain) as archive:
                recorded = archive.read(SKELETON_ENTRY).decode() if SKELETON_ENTRY in archive.namelist() else None
        except (ValueError, OSError, KeyError, zipfile.BadZipFile) as exc:
            raise ModelError(f"{path}: not a bpnet model file ({exc})") from exc
    if recorded is not None:
        skeleton = skeleton_from_json(recorded, f"{path}: {SKELETON_ENTRY}")
    elif _head_channels(model) == (BPNET_SKELETON.heat_channels, BPNET_SKELETON.paf_channels):
        skeleton = BPNET_SKELETON  # written before skeletons were recorded: all were the default
    else:
        raise ModelError(f"{path}: records no skeleton and its heads ({_head_channels(model)} channels) are not "
                         "the default skeleton's")
    if (skeleton.heat_channels, skeleton.paf_channels) != _head_channels(model):
        raise ModelError(f"{path}: its heads have {_head_channels(model)} heatmap / PAF channels, its recorded "
                         f"skeleton '{skeleton.name}' needs {skeleton.heat_channels} / {skeleton.paf_channels}")
    return ModelFile(model, skeleton)


def load_model(path: str | Path, key: str | None = None, compile: bool = False) -> keras.Model:
    """The Keras model of a model file (``open_model`` also gives its skeleton)."""
    return open_model(path, key, compile).model


def architecture_of(model: keras.Model) -> Architecture:
    """Recover the architecture (class and filter counts included) from a built model's layers.

    The class is told by the layer names (only the full model has per-branch trunks such as
    ``stage1_heat_conv1``), so model files written before the class was recorded reload too."""
    conv = {layer.name: layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)}
    stages = 1 + sum(1 for name in conv if name.startswith("stage") and name.endswith("_heat_out"))
    attention = any(name.endswith("_attention") for name in conv)
    class_name = FULL if "stage1_heat_conv1" in conv else LITE
    c128 = C128_CONV in conv
    names = default_filters(stages, attention, class_name=class_name, add_final_c128_conv=c128)
    return Architecture(
        stages=stages, heat_channels=conv["heatmap_out"].filters, paf_channels=conv["paf_out"].filters,
        use_self_attention=attention, use_bias=conv["heatmap_out"].use_bias,
        backbone_use_bias=conv["block1_conv1"].use_bias, filters={n: conv[n].filters for n in names},
        class_name=class_name, add_final_c128_conv=c128)


@dataclass
class WeightLoadReport:
    """What a load by layer name did; logged so the user sees what matched."""

    loaded: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)  # e.g. VGG kernel loaded, its bias dropped
    shape_mismatch: list[str] = field(default_factory=list)
    not_in_source: list[str] = field(default_factory=list)
    unused_in_source: list[str] = field(default_factory=list)
    keras_vgg19: bool = False  # the source is keras.applications' VGG19 (see keras_vgg19_backbone)

    def summary(self) -> str:
        kind = "keras.applications VGG19 " if self.keras_vgg19 else ""
        return (f"{kind}weights by layer name: {len(self.loaded)} loaded, {len(self.partial)} partially "
                f"(extra source arrays dropped), {len(self.shape_mismatch)} shape mismatch, "
                f"{len(self.not_in_source)} not in source, {len(self.unused_in_source)} unused source layers")


# The layers keras.applications' VGG19 shares with the bpnet backbone. VGG19's block4_conv3 (512 filters)
# is another layer than the backbone's 256-filter block4_conv3 (OpenPose's conv4_3_CPM), which starts
# from scratch; block5 only VGG19 has, so it tells such a file from a bpnet one.
KERAS_VGG19_SHARED = tuple(name for name, _ in BACKBONE_LAYERS if name != "block4_conv3")
KERAS_VGG19_MARKER = "block5_conv1"


def keras_vgg19_backbone(source: dict[str, list[np.ndarray]]) -> dict[str, list[np.ndarray]]:
    """keras.applications VGG19 weights as the bpnet backbone takes them: the shared layers only, and
    the first kernel's input channels reversed. Those weights expect BGR input ('caffe' preprocessing)
    and bpnet feeds RGB, so reversing them makes the first conv see each colour as it was trained to.
    The input scale and mean differ too (``image_scale``/``image_offset``); the batch norm after every
    backbone conv absorbs that, as it does the dropped biases."""
    shared = {name: source[name] for name in KERAS_VGG19_SHARED if name in source}
    if "block1_conv1" in shared:
        kernel, *rest = shared["block1_conv1"]
        shared["block1_conv1"] = [kernel[:, :, ::-1, :], *rest]
    return shared


def read_weights(path: str | Path, key: str | None = None) -> dict[str, list[np.ndarray]]:
    """Per-layer weight arrays from a bpnet model file, a Keras 2 ``.h5`` or a Keras 3 ``.weights.h5``."""
    import h5py

    path = Path(path)
    blob = path.read_bytes()
    if blob.startswith(MAGIC) or blob[:2] == b"PK":
        model = load_model(path, key)
        return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}
    with h5py.File(io.BytesIO(blob), "r") as h5:
        root = h5["model_weights"] if "model_weights" in h5 else h5
        if "layer_names" in root.attrs:  # Keras 2 layout (e.g. keras.applications VGG19 weights)
            out = {}
            for raw in root.attrs["layer_names"]:
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                group = root[name]
                weight_names = [w.decode() if isinstance(w, bytes) else str(w) for w in group.attrs["weight_names"]]
                if weight_names:
                    out[name] = [np.asarray(group[w]) for w in weight_names]
            return out
        if "layers" in root:  # Keras 3 .weights.h5 layout
            out = {}
            for name, group in root["layers"].items():
                vars_ = group.get("vars")
                if vars_ is not None and len(vars_):
                    out[name] = [np.asarray(vars_[str(i)]) for i in range(len(vars_))]
            return out
    raise ModelError(f"{path}: unrecognised weights file (expected a bpnet model, Keras .h5 or .weights.h5)")


def load_weights_by_name(model: keras.Model, path: str | Path, key: str | None = None) -> WeightLoadReport:
    source = read_weights(path, key)
    report = WeightLoadReport(keras_vgg19=KERAS_VGG19_MARKER in source)
    unused = set(source)
    if report.keras_vgg19:
        source = keras_vgg19_backbone(source)
    for layer in model.layers:
        if not layer.weights:
            continue
        arrays = source.get(layer.name)
        if arrays is None:
            report.not_in_source.append(layer.name)
            continue
        target = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] == target:
            layer.set_weights(arrays)
            report.loaded.append(layer.name)
        elif len(arrays) > len(target) and [a.shape for a in arrays[:len(target)]] == target:
            layer.set_weights(arrays[:len(target)])
            report.partial.append(layer.name)
        else:
            report.shape_mismatch.append(layer.name)
    report.unused_in_source = sorted(unused - {layer.name for layer in model.layers if layer.name in source})
    log.info("%s: %s", path, report.summary())
    return report
