"""INT8 calibration: the tensorfile, activation ranges, the TensorRT cache, an ORT QDQ model.

**Tensorfile** (``--cal_data_file``): a NumPy ``.npy`` file holding one float32 array of shape
``(batches, batch_size, H, W, 3)``: ``batches x batch_size`` images from ``--cal_image_dir``
(sorted by name, the first readable ones taken: an unreadable image is skipped with a warning
naming it, as inference and evaluation skip one; too few readable ones is a DataError),
preprocessed by the inference preprocessing (``bpnet.infer.network_input``: fitted into H x W as
``keep_aspect_ratio_mode`` says, RGB, ``(pixel / image_scale) - image_offset``). An existing
tensorfile of the right shape is reused, as the guide says; one of another shape is an error
rather than silently wrong data.

**Ranges** come from ONNX Runtime's calibrators (entropy by default, with TensorRT's 2048-bin
histograms; percentile 99.999 and minmax selectable) over every tensor of the exported graph.

**TensorRT calibration cache** (``--cal_cache_file``), TensorRT's own text format: a header line
(``TRT-<version>-EntropyCalibration2``), then one ``<tensor name>: <scale>`` line per tensor, the
scale (``max(|low|, |high|) / 127``) written as the 8 hex digits of its big-endian float32. The
names are the ONNX graph's tensor names, which TensorRT's ONNX parser keeps. An existing cache
skips calibration, as the guide says.

**Fitting a cache to the SDK-compatible export** (``derive_scales``): that export is the standard
graph plus a PAF upsampling, but tf2onnx numbers tensor names per export, so a name of one graph
may be another tensor (or nothing) in the other. Tensors are matched by structure instead (op
type, attributes, weights and, recursively, inputs), so a matched tensor computes the same values
on the same images and takes the standard tensor's scale. A tensor with no match must come from
an op that cannot widen its input's range (``|y| <= max |x|``: layout ops, ReLU, max pooling,
nearest/linear resizing, a transposed convolution whose taps per output position sum to at most 1
in absolute value, as the bilinear upsampling's do): it takes its input's scale, so its range is
no wider than its input's (an upper bound of its own range under minmax; under entropy the same
clipping threshold as its input). Anything else is refused rather than given a guessed scale.

**QDQ INT8 model**: ONNX Runtime's ``quantize_static`` fed exactly the cache's scales (symmetric
int8 activations, per-channel int8 weights; the output heads in float, as TensorRT keeps network
outputs in fp32), so the INT8 accuracy measured on a CPU is that of the cache TensorRT gets — also
when an existing cache was reused (it must fit the graph, or it is refused).
"""

from __future__ import annotations

import json
import logging
import math
import string
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np

from bpnet.artifacts import atomic_output, atomic_write_text
from bpnet.errors import DataError, ModelError, UsageError
from bpnet.infer.network_input import plan, to_network_input
from bpnet.layout import EXPORTED_MODE
from bpnet.preprocess import IMAGE_SUFFIXES, ImageReadError, read_image
from bpnet.settings import CalibrationMethod

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = get_args(CalibrationMethod)
TRT_CACHE_HEADER = "TRT-100300-EntropyCalibration2"  # TensorRT 10.3 (JetPack 6.1), the images' base
HEX_DIGITS = frozenset(string.hexdigits)


def _too_few(folder: Path, usable: int, skipped: int, count: int) -> DataError:
    """Named by the settings, which the CLI (--batches/--batch_size) and a run spec (export.*) set."""
    unreadable = f", {skipped} unreadable ones skipped" if skipped else ""
    kinds = "/".join(IMAGE_SUFFIXES)
    return DataError(f"calibration images {folder}: {usable} usable ({kinds}{unreadable}), but "
                     f"cal_batches x cal_batch_size = {count} are needed; add images or lower them "
                     "(--batches/--batch_size, or export.cal_batches/cal_batch_size in a run spec)")


def calibration_candidates(names: Iterable[str]) -> list[str]:
    """The names of a folder's files calibration may take, in the order it takes them: images (by
    suffix), sorted by name. One rule for the local folder and for a calibration-image artifact
    made from an object store (components.runtime.calibration_data), so the artifact holds exactly
    the images calibration would have read from the whole split."""
    return sorted(n for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES)


def calibration_set(names: Iterable[str], count: int, fetch: Callable[[str], Path],
                    where: str | Path) -> Iterator[tuple[Path, np.ndarray]]:
    """The first ``count`` readable images of ``calibration_candidates(names)`` as (path, pixels);
    ``fetch`` makes a name a local file (the folder's own path, or a download), and is called only
    for the names taken or skipped, so a caller reading an object store moves just those. An
    unreadable image is skipped with a warning naming it; too few is a DataError naming ``where``."""
    candidates = calibration_candidates(names)
    if len(candidates) < count:
        raise _too_few(Path(where), len(candidates), 0, count)
    taken = skipped = 0
    for name in candidates:
        if taken == count:
            return
        path = fetch(name)
        try:
            pixels = read_image(path)
        except ImageReadError as exc:  # its message names the file and says why
            log.warning("calibration skips an unreadable image: %s", exc)
            skipped += 1
            continue
        taken += 1
        yield path, pixels
    if taken < count:
        raise _too_few(Path(where), taken, skipped, count)


def folder_calibration_set(image_dir: str | Path, count: int) -> Iterator[tuple[Path, np.ndarray]]:
    """``calibration_set`` over a local folder's files (its top level)."""
    folder = Path(image_dir)
    if not folder.is_dir():
        raise DataError(f"calibration images {folder} (--cal_image_dir): not a directory")
    return calibration_set([p.name for p in folder.iterdir() if p.is_file()], count, folder.joinpath, folder)


def build_tensorfile(image_dir: str | Path | None, dest: str | Path, batches: int, batch_size: int,
                     height: int, width: int, image_scale: tuple[float, float, float],
                     image_offset: tuple[float, float, float], mode: str | None = EXPORTED_MODE) -> np.ndarray:
    """The calibration tensor (batches, batch_size, H, W, 3): read from ``dest`` if it exists."""
    dest = Path(dest)
    shape = (batches, batch_size, height, width, 3)
    if dest.is_file():
        try:
            data = np.load(dest, mmap_mode="r")
        except (ValueError, EOFError):  # not a .npy file (pickles are refused too), or empty
            data = None
        if not isinstance(data, np.ndarray):  # also an .npz archive, which loads as a mapping of arrays
            if isinstance(data, np.lib.npyio.NpzFile):
                data.close()
            raise DataError(f"--cal_data_file {dest}: not a NumPy .npy tensorfile; remove it to build it again "
                            "from the images")
        if data.shape != shape or data.dtype != np.float32:
            raise DataError(f"--cal_data_file {dest}: holds {data.dtype} {data.shape}, expected float32 {shape} "
                            "(batches, batch_size, H, W, 3); remove it or pass the matching settings")
        log.info("reusing tensorfile %s %s", dest, shape)
        return data
    if image_dir is None:
        raise UsageError(f"missing — --cal_data_file {dest} does not exist, so images are needed to build it",
                         field="cal_image_dir")
    data = np.empty(shape, np.float32)
    for filled, (_, image) in enumerate(folder_calibration_set(image_dir, batches * batch_size)):
        p = plan(image.shape[0], image.shape[1], (height, width), mode)
        data[divmod(filled, batch_size)] = to_network_input(image, p, image_scale, image_offset)
    with atomic_output(dest) as tmp, open(tmp, "wb") as f:
        np.save(f, data)
    log.info("wrote tensorfile %s %s", dest, shape)
    return data


class _Batches:
    """ONNX Runtime's CalibrationDataReader over a tensorfile (one batch per call)."""

    def __init__(self, input_name: str, tensors: np.ndarray):
        self._items: Iterator = ({input_name: np.ascontiguousarray(b)} for b in tensors)

    def get_next(self) -> dict | None:
        return next(self._items, None)


def _method(method: CalibrationMethod):
    from onnxruntime.quantization import CalibrationMethod as OrtMethod

    if method not in METHODS:
        raise UsageError(f"{method!r} — expected one of {', '.join(METHODS)}", field="cal_method")
    return {"entropy": OrtMethod.Entropy, "percentile": OrtMethod.Percentile,
            "minmax": OrtMethod.MinMax}[method]


# TensorRT's entropy calibration histograms 2048 bins and searches thresholds over 128 quantized
# bins; ONNX Runtime's defaults (128/128) leave it a single candidate: the full range.
_CALIBRATOR_OPTIONS = {"entropy": {"num_bins": 2048, "num_quantized_bins": 128, "symmetric": True},
                       "percentile": {"num_bins": 2048, "percentile": 99.999, "symmetric": True},
                       "minmax": {"symmetric": True}}


def graph_tensors(onnx_bytes: bytes) -> set[str]:
    """Names of the float tensors TensorRT would see: graph inputs and node outputs."""
    import onnx

    graph = onnx.load_model_from_string(onnx_bytes).graph
    return {i.name for i in graph.input} | {o for node in graph.node for o in node.output if o}


def _bound(value) -> float:
    return float(np.ravel(value)[0])  # calibrators return scalars or 1-element arrays


def activation_ranges(onnx_bytes: bytes, input_name: str, tensors: np.ndarray,
                      method: CalibrationMethod = "entropy") -> dict[str, tuple[float, float]]:
    """(low, high) of every graph tensor over the tensorfile, by ONNX Runtime's calibrator."""
    from onnxruntime.quantization import create_calibrator

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.onnx"
        model.write_bytes(onnx_bytes)
        calibrator = create_calibrator(model, op_types_to_calibrate=None, augmented_model_path=Path(tmp) / "aug.onnx",
                                       calibrate_method=_method(method), extra_options=_CALIBRATOR_OPTIONS[method])
        calibrator.collect_data(_Batches(input_name, tensors))
        data = calibrator.compute_data().data
    names = graph_tensors(onnx_bytes)
    return {name: (_bound(d.range_value[0]), _bound(d.range_value[1])) for name, d in sorted(data.items())
            if name in names}


def trt_scale(low: float, high: float) -> float:
    """Symmetric int8 scale; a tensor that never moved gets the smallest normal float32."""
    scale = max(abs(low), abs(high)) / 127.0
    return scale if math.isfinite(scale) and scale > 0 else float(np.finfo(np.float32).tiny)


def write_scales(scales: dict[str, float], dest: str | Path, header: str = TRT_CACHE_HEADER) -> Path:
    """A TensorRT calibration cache of ``scales`` (the one writer of the format)."""
    lines = [header] + [f"{name}: {struct.pack('>f', scale).hex()}" for name, scale in sorted(scales.items())]
    atomic_write_text(dest, "\n".join(lines) + "\n")
    return Path(dest)


def write_trt_cache(ranges: dict[str, tuple[float, float]], dest: str | Path,
                    header: str = TRT_CACHE_HEADER) -> Path:
    return write_scales({name: trt_scale(lo, hi) for name, (lo, hi) in ranges.items()}, dest, header)


def read_trt_cache(path: str | Path) -> tuple[str, dict[str, float]]:
    """(header, tensor name -> scale) of a TensorRT calibration cache; a ModelError names a bad line."""
    try:
        lines = Path(path).read_text().splitlines()
    except UnicodeDecodeError:
        raise ModelError(f"{path}: not a TensorRT calibration cache (not text)") from None
    if not lines or not lines[0].startswith("TRT-"):
        raise ModelError(f"{path}: not a TensorRT calibration cache (no TRT-... header line)")
    scales = {}
    for number, line in enumerate(lines[1:], start=2):
        name, sep, value = line.rpartition(": ")
        if not sep or len(value) != 8 or not set(value) <= HEX_DIGITS:
            raise ModelError(f"{path}: line {number}: expected '<tensor>: <8 hex digits>', got {line!r}")
        scales[name] = struct.unpack(">f", bytes.fromhex(value))[0]
    return lines[0], scales


def model_fingerprint(onnx_bytes: bytes) -> str:
    """What identifies the weights of an exported graph whatever tf2onnx named its tensors: a
    digest of the sorted digests of its initializers (two exports of one model share it; another
    model of the same architecture does not)."""
    import hashlib

    import onnx
    from onnx import numpy_helper

    graph = onnx.load_model_from_string(onnx_bytes).graph
    parts = sorted(hashlib.sha256(numpy_helper.to_array(t).tobytes()).hexdigest() + str(list(t.dims))
                   for t in graph.initializer)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def cache_record(cache: str | Path) -> Path:
    """The sidecar of a calibration cache, ``<cache>.json``: the fingerprint of the model it is of."""
    return Path(f"{cache}.json")


def write_cache_record(cache: str | Path, onnx_bytes: bytes) -> None:
    atomic_write_text(cache_record(cache), json.dumps({"model_fingerprint": model_fingerprint(onnx_bytes)}) + "\n")


def check_cache_model(cache: str | Path, onnx_bytes: bytes, foreign: bool = False) -> None:
    """A cache reused must be of this model (its sidecar says so): a cache of another model of the
    same architecture fits the graph and would be used without a word (a lower INT8 AP). ``foreign``
    accepts a cache of another or an unknown model, with a warning."""
    try:
        recorded = json.loads(cache_record(cache).read_text()).get("model_fingerprint")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded == model_fingerprint(onnx_bytes):
        return
    whose = "of another model" if recorded else f"of an unknown model (no readable {cache_record(cache).name})"
    if foreign:
        log.warning("--cal_cache_file %s: a cache %s, used as asked (--foreign_cal_cache)", cache, whose)
        return
    raise ModelError(f"--cal_cache_file {cache}: a cache {whose}; remove it to calibrate this model, or pass "
                     "--foreign_cal_cache to use it anyway")


def check_cache_fits(scales: dict[str, float], onnx_bytes: bytes, where: str) -> None:
    """An existing cache must be for this graph: every name in it is a tensor of the graph, and every
    convolution's output has a scale (a cache of another model would be used silently otherwise)."""
    import onnx

    names = graph_tensors(onnx_bytes)
    foreign = sorted(set(scales) - names)
    convs = {o for n in onnx.load_model_from_string(onnx_bytes).graph.node if n.op_type == "Conv" for o in n.output}
    missing = sorted(convs - set(scales))
    if foreign or missing:
        raise ModelError(f"--cal_cache_file {where}: not a cache of this model ({len(foreign)} tensors not in "
                         f"the graph, e.g. {foreign[:2]}; {len(missing)} convolution outputs without a scale, "
                         f"e.g. {missing[:2]}); remove it to calibrate again")


def _structure(graph) -> dict[str, str]:
    """Tensor name -> digest of what computes it (op, attributes, weights, input digests), names
    of nodes and intermediate tensors left out; graph inputs are named by their own name."""
    import hashlib

    from onnx import numpy_helper

    digests = {i.name: f"input:{i.name}" for i in graph.input}
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        digests[init.name] = "weight:" + hashlib.sha256(
            f"{array.dtype}{array.shape}".encode() + array.tobytes()).hexdigest()
    for node in graph.node:  # ONNX lists nodes in topological order
        attributes = b"".join(a.SerializeToString() for a in sorted(node.attribute, key=lambda a: a.name))
        inputs = "|".join(digests.get(i, "missing") if i else "" for i in node.input)
        base = hashlib.sha256(f"{node.domain}:{node.op_type}|{inputs}|".encode() + attributes).hexdigest()
        for index, out in enumerate(node.output):
            digests[out] = f"{base}:{index}"
    return digests


_RANGE_KEEPING = frozenset({"Identity", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Relu",
                            "MaxPool"})


def _widening(node, graph) -> str | None:
    """Why ``node`` may output values beyond its first input's range (None: it cannot)."""
    from onnx import helper, numpy_helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type in _RANGE_KEEPING:
        return None
    if node.op_type == "Resize":
        mode = attrs.get("mode", b"nearest")
        return None if mode in (b"nearest", b"linear") else f"Resize mode {mode.decode()} can overshoot"
    if node.op_type == "ConvTranspose":
        weights = {i.name: i for i in graph.initializer}
        if node.input[1] not in weights:
            return "ConvTranspose with weights computed in the graph"
        if len(node.input) > 2 and node.input[2] and np.any(numpy_helper.to_array(weights[node.input[2]])):
            return "ConvTranspose with a bias"
        w = np.abs(numpy_helper.to_array(weights[node.input[1]]))  # (in, out / group, kh, kw)
        if w.ndim != 4 or attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1, 1])):
            return "ConvTranspose other than 2-D, ungrouped and undilated"
        strides = attrs.get("strides", [1, 1])
        # each output position of a phase gets the taps k = phase (mod stride) of every input channel
        sums = [w[:, :, py::strides[0], px::strides[1]].sum(axis=(0, 2, 3)).max()
                for py in range(strides[0]) for px in range(strides[1])]
        if max(sums) > 1.0 + 1e-5:
            return f"ConvTranspose whose taps per output position sum to {max(sums):.4g} > 1 in absolute value"
        return None
    return f"{node.op_type} is not known to keep the range of its input"


@dataclass(frozen=True)
class DerivedScales:
    """A cache's scales carried to another export of the same network."""

    scales: dict[str, float]
    derived: frozenset[str]  # tensors of that graph alone (the upsampling): their input's scale
    renamed: int  # tensors computed as in the standard export but named otherwise there


def derive_scales(standard: bytes, scales: dict[str, float], sdk: bytes) -> DerivedScales:
    """The scales of the standard export's cache carried to the SDK-compatible export (ONNX bytes
    of both): by structure, and for the added tensors their input's scale (see the module's
    docstring); a ModelError names the op that could widen a range."""
    import onnx

    std_graph, sdk_graph = (onnx.load_model_from_string(b).graph for b in (standard, sdk))
    std_digests = _structure(std_graph)
    by_structure: dict[str, float] = {}
    for name, digest in std_digests.items():
        if name in scales:  # identical computations have equal ranges; max() if a graph repeats one
            by_structure[digest] = max(scales[name], by_structure.get(digest, 0.0))
    known = set(std_digests.values())
    digests, producer = _structure(sdk_graph), {o: n for n in sdk_graph.node for o in n.output}
    derived, added, renamed = {}, set(), 0
    for name in [i.name for i in sdk_graph.input] + [o for n in sdk_graph.node for o in n.output if o]:
        if digests[name] in known:  # computed as in the standard export: its scale, if it had one
            if digests[name] in by_structure:
                derived[name] = by_structure[digests[name]]
                renamed += std_digests.get(name) != digests[name]
            continue
        node = producer.get(name)
        if node is None:
            raise ModelError(f"tensor {name}: a graph input the standard export does not have; the models do "
                             "not belong together")
        why = _widening(node, sdk_graph)
        if why is None and node.input[0] not in derived:
            why = f"its input {node.input[0]} has no scale"
        if why is not None:
            raise ModelError(f"tensor {name} ({node.op_type} node {node.name}) of the SDK-compatible model has no "
                             f"scale in the standard export's cache and none can be derived: {why}; calibrate "
                             "that model itself")
        derived[name] = derived[node.input[0]]
        added.add(name)
    return DerivedScales(derived, frozenset(added), renamed)


def output_heads(onnx_bytes: bytes) -> list[str]:
    """The compute nodes that produce the graph's outputs (walking back through layout-only ops)."""
    import onnx

    graph = onnx.load_model_from_string(onnx_bytes).graph
    producer = {out: node for node in graph.node for out in node.output}
    heads = []
    for output in graph.output:
        node = producer.get(output.name)
        while node is not None and node.op_type in ("Transpose", "Identity", "Reshape", "Squeeze", "Unsqueeze"):
            node = producer.get(node.input[0])
        if node is not None:
            heads.append(node.name)
    return heads


def quantize_qdq(onnx_bytes: bytes, scales: dict[str, float]) -> bytes:
    """An ONNX Runtime QDQ INT8 model with exactly the TensorRT cache's scales (symmetric int8
    activations, range ±127·scale), per-channel int8 weights; the two output heads stay in float, as
    TensorRT keeps network outputs in fp32 (quantizing the heatmaps themselves cost 3.6 AP points on
    the demo; this costs none)."""
    from onnxruntime.quantization import CalibrationMethod as OrtMethod
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    ranges = TensorsData(OrtMethod.MinMax, {
        name: TensorData(lowest=np.array(-127.0 * s, np.float32), highest=np.array(127.0 * s, np.float32))
        for name, s in scales.items()})
    with tempfile.TemporaryDirectory() as tmp:
        src, out, cache = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx", Path(tmp) / "ranges.json"
        src.write_bytes(onnx_bytes)
        save_tensors_data(ranges, cache)
        quantize_static(src, out, None, quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, per_channel=True, calibrate_method=OrtMethod.MinMax,
                        calibration_cache_path=cache, nodes_to_exclude=output_heads(onnx_bytes),
                        extra_options={"ActivationSymmetric": True})
        return out.read_bytes()
