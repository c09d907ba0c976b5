"""Images/s at batch 1: Keras vs ONNX Runtime fp32 vs ONNX Runtime INT8 (QDQ), on this CPU.

The default 3-stage BpNetLiteModel (16.8 M parameters, random weights: speed does not depend on
them) exported at 224x320, 288x384 and 320x448 — the guide's deployment sizes — and calibrated on
8 synthetic demo images (`bpnet synth`) for the INT8 model, exactly as `bpnet export --data_type
int8` does. Goal: ORT fp32 no slower than Keras; ORT INT8 >= 3.5x Keras.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from bpnet.data.synth import generate  # noqa: E402
from bpnet.deploy.calibration import activation_ranges, build_tensorfile, quantize_qdq, trt_scale  # noqa: E402
from bpnet.deploy.onnx_export import to_onnx  # noqa: E402
from bpnet.model.architecture import Architecture  # noqa: E402
from bpnet.model.bpnet import build_model  # noqa: E402
from bpnet.model.exported import INPUT_NAME  # noqa: E402

SIZES = ((224, 320), (288, 384), (320, 448))


def rate(run, x: np.ndarray, seconds: float = 6.0) -> float:
    run(x)  # warm up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(x)
        done += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    import onnxruntime as ort

    logging.disable(logging.WARNING)
    model = build_model(Architecture(stages=3), seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp) / "demo", seed=0, train_images=8, val_images=1)
        for height, width in SIZES:
            proto, _ = to_onnx(model, height, width)
            fp32 = proto.SerializeToString()
            tensors = build_tensorfile(Path(tmp) / "demo" / "train2017", Path(tmp) / f"t{height}.npy", 8, 1,
                                       height, width, (256.0,) * 3, (0.5,) * 3)
            ranges = activation_ranges(fp32, INPUT_NAME, tensors)
            int8 = quantize_qdq(fp32, {name: trt_scale(lo, hi) for name, (lo, hi) in ranges.items()})
            x = tensors[0]
            keras_rate = rate(lambda b: model(b, training=False), x)
            rates = {"Keras": keras_rate}
            for name, data in (("ORT fp32", fp32), ("ORT INT8", int8)):
                session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
                rates[name] = rate(lambda b, s=session: s.run(None, {INPUT_NAME: b}), x)
            print(f"{height}x{width} batch 1: " + ", ".join(
                f"{k} {v:.2f} img/s (x{v / keras_rate:.2f})" for k, v in rates.items()), flush=True)


if __name__ == "__main__":
    main()
