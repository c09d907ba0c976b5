"""The Triton Python-backend model of a release: the project's own pre- and post-processing
around the network, so a client sends an image and gets people, not feature maps.

A release copies this file as ``model.py`` into two Triton models; their ``config.pbtxt``
parameter ``stage`` picks the part:

- ``preprocess``: ``IMAGE`` (H, W, 3) UINT8 RGB of any size -> the network input (fit and padded
  to the exported size with the training normalization, ``bpnet.infer.network_input``) and ``PLAN``
  (6 INT32: image h, w, network h, w, resized h, w) to map keypoints back;
- ``decode``: the network's heatmaps and PAFs + ``PLAN`` -> ``KEYPOINTS`` (max_people, J, 3:
  x, y, score in image pixels; 0 = missing), ``SCORES`` (max_people) and ``PEOPLE`` (1 INT32),
  decoded by ``bpnet.infer.decode`` with the inference spec's parameters and the model's skeleton
  (parameter ``bpnet``, JSON), exactly as ``bpnet inference`` does.

Triton's model directory cannot hold the library, so the Triton image needs ``bpnet`` installed
(``pip install`` of this project; see docs/deploy.md). ``triton_python_backend_utils`` exists
only inside Triton: it is imported when the model is loaded, never at import time.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Any

import numpy as np

from bpnet.infer.decode import DecodeParams, decode
from bpnet.infer.network_input import InputPlan, plan, to_network_input
from bpnet.layout import EXPORTED_MODE
from bpnet.pose import Skeleton, parse_pose_config

IMAGE, PLAN, KEYPOINTS, SCORES, PEOPLE = "IMAGE", "PLAN", "KEYPOINTS", "SCORES", "PEOPLE"
log = logging.getLogger(__name__)


def settings_from(params: DecodeParams, image_scale: tuple[float, ...], image_offset: tuple[float, ...],
                  input_shape: tuple[int, int], network_io: dict[str, str], max_people: int,
                  skeleton: Skeleton) -> dict[str, Any]:
    """The ``bpnet`` parameter of both stages: the decoder parameters (from the inference spec),
    the training normalization, the exported input size, the network's tensor names and the
    model's skeleton (its pose config)."""
    return {"input_shape": list(input_shape), "keep_aspect_ratio_mode": EXPORTED_MODE,
            "image_scale": list(image_scale), "image_offset": list(image_offset),
            "decode": asdict(params), "max_people": max_people, "skeleton": skeleton.to_config(), **network_io}


def decode_params(settings: dict[str, Any]) -> DecodeParams:
    d = settings["decode"]
    return DecodeParams(**{**d, "upsampling": tuple(d["upsampling"])})


class TritonPythonModel:
    """Triton's Python-backend entry point (``initialize`` / ``execute``)."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.stage = params["stage"]
        if self.stage not in ("preprocess", "decode"):
            raise ValueError(f"parameter stage: '{self.stage}' is not preprocess or decode")
        self.settings = json.loads(params["bpnet"])
        self.params = decode_params(self.settings)
        self.skeleton = parse_pose_config(self.settings["skeleton"], "parameter bpnet: skeleton")

    def _preprocess(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.settings
        _require(image.ndim == 3 and image.shape[2] == 3 and image.shape[0] >= 1 and image.shape[1] >= 1,
                 IMAGE, f"an image is {image.shape}; expected (height >= 1, width >= 1, 3)")
        _require(image.dtype == np.uint8, IMAGE, f"is {image.dtype}; expected UINT8 RGB")
        p = plan(image.shape[0], image.shape[1], s["input_shape"], s["keep_aspect_ratio_mode"])
        net = to_network_input(image, p, s["image_scale"], s["image_offset"])
        shape = np.array([p.image_h, p.image_w, p.net_h, p.net_w, p.resized_h, p.resized_w], np.int32)
        return net, shape

    def _decode(self, heat: np.ndarray, paf: np.ndarray, shape: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = self._checked_plan(heat, paf, shape)
        people = decode(heat, paf, self.params, p.net_h, self.skeleton)
        limit = self.settings["max_people"]
        keypoints = np.zeros((limit, self.skeleton.num_joints, 3), np.float32)
        scores = np.zeros(limit, np.float32)
        for i, person in enumerate(people[:limit]):
            kps = person.keypoints.copy()
            found = kps[:, 2] > 0
            kps[found, :2] = p.to_image(kps[found, :2])
            keypoints[i], scores[i] = kps, person.score
        return keypoints, scores, np.array([min(len(people), limit)], np.int32)

    def _checked_plan(self, heat: np.ndarray, paf: np.ndarray, shape: np.ndarray) -> InputPlan:
        """The request's PLAN, checked against the maps and the exported size, so a mismatch is an
        error instead of people placed outside the image."""
        s, skeleton = self.settings, self.skeleton
        _require(heat.ndim == 3 and heat.shape[-1] == skeleton.heat_channels and min(heat.shape[:2]) >= 1,
                 s["heatmap_name"], f"is {heat.shape} per image; expected (height, width, {skeleton.heat_channels})")
        _require(paf.ndim == 3 and paf.shape[-1] == skeleton.paf_channels and paf.shape[:2] == heat.shape[:2],
                 s["paf_name"], f"is {paf.shape} per image; expected {heat.shape[:2] + (skeleton.paf_channels,)}")
        _require(np.isfinite(heat).all(), s["heatmap_name"], "holds NaN or infinite values")
        _require(np.isfinite(paf).all(), s["paf_name"], "holds NaN or infinite values")
        _require(shape.shape == (6,) and np.issubdtype(shape.dtype, np.integer), PLAN,
                 f"is {shape.shape} {shape.dtype} per image; expected 6 integers")
        p = InputPlan(*(int(v) for v in shape))
        net = tuple(s["input_shape"])
        _require((p.net_h, p.net_w) == net, PLAN, f"names a {p.net_h}x{p.net_w} network input; the model's is "
                                                   f"{net[0]}x{net[1]}")
        _require(p.image_h >= 1 and p.image_w >= 1 and 1 <= p.resized_h <= p.net_h and 1 <= p.resized_w <= p.net_w,
                 PLAN, f"{shape.tolist()} is not a plan of preprocess (image h, w, network h, w, resized h, w)")
        for name, maps in ((s["heatmap_name"], heat), (s["paf_name"], paf)):
            h, w = maps.shape[:2]
            _require(p.net_h % h == 0 and p.net_w % w == 0 and p.net_h // h == p.net_w // w, name,
                     f"is {h}x{w}; expected the {net[0]}x{net[1]} input divided by one stride")
        return p

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request (every request may carry a batch: first axis); a bad request
        gets an error response naming its tensor, the others in the same call are answered."""
        responses = []
        for request in requests:
            try:
                tensors = self._answer(request)
            except RequestError as exc:
                responses.append(self._error(str(exc)))
                continue
            except Exception as exc:  # noqa: BLE001 - one request's bug must not fail the others in the call
                log.exception("bpnet %s: a request failed", self.stage)
                responses.append(self._error(f"bpnet {self.stage}: cannot answer ({type(exc).__name__}: {exc})"))
                continue
            responses.append(self.pb.InferenceResponse(output_tensors=tensors))
        return responses

    def _error(self, message: str) -> Any:
        return self.pb.InferenceResponse(output_tensors=[], error=self.pb.TritonError(message))

    def _answer(self, request: Any) -> list[Any]:
        pb, s = self.pb, self.settings
        if self.stage == "preprocess":
            images = _input(pb, request, IMAGE, 4)
            outs = [self._preprocess(image) for image in images]
            return [pb.Tensor(s["input_name"], np.stack([o[0] for o in outs])),
                    pb.Tensor(PLAN, np.stack([o[1] for o in outs]))]
        heats = _input(pb, request, s["heatmap_name"], 4)
        pafs = _input(pb, request, s["paf_name"], 4)
        shapes = _input(pb, request, PLAN, 2)
        _require(len(heats) == len(pafs) == len(shapes), PLAN, f"batches differ: {len(heats)} heatmaps, "
                                                             f"{len(pafs)} PAFs, {len(shapes)} plans")
        outs = [self._decode(h, f, p) for h, f, p in zip(heats, pafs, shapes, strict=True)]
        return [pb.Tensor(name, np.stack([o[i] for o in outs])) for i, name in enumerate((KEYPOINTS, SCORES, PEOPLE))]


class RequestError(ValueError):
    """A request that cannot be answered; the message names the tensor."""


def _require(ok: bool, tensor: str, problem: str) -> None:
    if not ok:
        raise RequestError(f"input {tensor}: {problem}")


def _input(pb: Any, request: Any, name: str, ndim: int) -> np.ndarray:
    """The named input as an array with a batch axis and at least one item."""
    tensor = pb.get_input_tensor_by_name(request, name)
    _require(tensor is not None, name, "missing")
    array = np.asarray(tensor.as_numpy())
    _require(array.ndim == ndim and len(array) >= 1, name, f"is {array.shape}; expected {ndim} axes, a batch "
                                                          "of at least one")
    return array
