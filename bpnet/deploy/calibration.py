"""INT8 calibration: the tensorfile, activation ranges, the TensorRT cache, an ORT QDQ model.

**Tensorfile** (``--cal_data_file``): a NumPy ``.npy`` file holding one float32 array of shape
``(batches, batch_size, H, W, 3)``: ``batches x batch_size`` images from ``--cal_image_dir``
(sorted by name, the first ones taken), preprocessed by the inference preprocessing
(``bpnet.infer.network_input``: fitted into H x W as ``keep_aspect_ratio_mode`` says, RGB,
``(pixel / image_scale) - image_offset``). An existing tensorfile of the right shape is reused,
as the guide says; one of another shape is an error rather than silently wrong data.

**Ranges** come from ONNX Runtime's calibrators (entropy by default, with TensorRT's 2048-bin
histograms; percentile 99.999 and minmax selectable) over every tensor of the exported graph.

**TensorRT calibration cache** (``--cal_cache_file``), TensorRT's own text format: a header line
(``TRT-<version>-EntropyCalibration2``), then one ``<tensor name>: <scale>`` line per tensor, the
scale (``max(|low|, |high|) / 127``) written as the 8 hex digits of its big-endian float32. The
names are the ONNX graph's tensor names, which TensorRT's ONNX parser keeps. An existing cache
skips calibration, as the guide says.

**QDQ INT8 model**: ONNX Runtime's ``quantize_static`` fed exactly the cache's scales (symmetric
int8 activations, per-channel int8 weights; the output heads in float, as TensorRT keeps network
outputs in fp32), so the INT8 accuracy measured on a CPU is that of the cache TensorRT gets — also
when an existing cache was reused (it must fit the graph, or it is refused).
"""

from __future__ import annotations

import logging
import math
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import numpy as np

from bpnet.artifacts import atomic_output, atomic_write_text
from bpnet.settings import CalibrationMethod
from bpnet.infer.network_input import plan, to_network_input
from bpnet.preprocess import read_image

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = get_args(CalibrationMethod)
TRT_CACHE_HEADER = "TRT-100300-EntropyCalibration2"  # TensorRT 10.3 (JetPack 6.1), the images' base
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def calibration_images(image_dir: str | Path, count: int) -> list[Path]:
    folder = Path(image_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"--cal_image_dir {folder}: not a directory")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(images) < count:
        raise ValueError(f"--cal_image_dir {folder}: {len(images)} images (.jpg/.jpeg/.png), but batches x "
                         f"batch_size = {count} are needed")
    return images[:count]


def build_tensorfile(image_dir: str | Path | None, dest: str | Path, batches: int, batch_size: int,
                     height: int, width: int, image_scale: tuple[float, float, float],
                     image_offset: tuple[float, float, float], mode: str | None = "pad_image_input") -> np.ndarray:
    """The calibration tensor (batches, batch_size, H, W, 3): read from ``dest`` if it exists."""
    dest = Path(dest)
    shape = (batches, batch_size, height, width, 3)
    if dest.is_file():
        data = np.load(dest, mmap_mode="r")
        if data.shape != shape or data.dtype != np.float32:
            raise ValueError(f"--cal_data_file {dest}: holds {data.dtype} {data.shape}, expected float32 {shape} "
                             "(batches, batch_size, H, W, 3); remove it or pass the matching settings")
        log.info("reusing tensorfile %s %s", dest, shape)
        return data
    if image_dir is None:
        raise ValueError(f"--cal_data_file {dest} does not exist and no --cal_image_dir was given to build it")
    data = np.empty(shape, np.float32)
    for index, path in enumerate(calibration_images(image_dir, batches * batch_size)):
        image = read_image(path)
        p = plan(image.shape[0], image.shape[1], (height, width), mode)
        data[divmod(index, batch_size)] = to_network_input(image, p, image_scale, image_offset)
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
        raise ValueError(f"calibration method {method!r}: expected one of {', '.join(METHODS)}")
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


def write_trt_cache(ranges: dict[str, tuple[float, float]], dest: str | Path,
                    header: str = TRT_CACHE_HEADER) -> Path:
    lines = [header] + [f"{name}: {struct.pack('>f', trt_scale(lo, hi)).hex()}" for name, (lo, hi) in
                        sorted(ranges.items())]
    atomic_write_text(dest, "\n".join(lines) + "\n")
    return Path(dest)


def read_trt_cache(path: str | Path) -> tuple[str, dict[str, float]]:
    """(header, tensor name -> scale) of a TensorRT calibration cache; ValueError names a bad line."""
    lines = Path(path).read_text().splitlines()
    if not lines or not lines[0].startswith("TRT-"):
        raise ValueError(f"{path}: not a TensorRT calibration cache (no TRT-... header line)")
    scales = {}
    for number, line in enumerate(lines[1:], start=2):
        name, sep, value = line.rpartition(": ")
        if not sep or len(value) != 8:
            raise ValueError(f"{path}: line {number}: expected '<tensor>: <8 hex digits>', got {line!r}")
        scales[name] = struct.unpack(">f", bytes.fromhex(value))[0]
    return lines[0], scales


def check_cache_fits(scales: dict[str, float], onnx_bytes: bytes, where: str) -> None:
    """An existing cache must be for this graph: every name in it is a tensor of the graph, and every
    convolution's output has a scale (a cache of another model would be used silently otherwise)."""
    import onnx

    names = graph_tensors(onnx_bytes)
    foreign = sorted(set(scales) - names)
    convs = {o for n in onnx.load_model_from_string(onnx_bytes).graph.node if n.op_type == "Conv" for o in n.output}
    missing = sorted(convs - set(scales))
    if foreign or missing:
        raise ValueError(f"--cal_cache_file {where}: not a cache of this model ({len(foreign)} tensors not in "
                         f"the graph, e.g. {foreign[:2]}; {len(missing)} convolution outputs without a scale, "
                         f"e.g. {missing[:2]}); remove it to calibrate again")


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
