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
from dataclasses import asdict
from typing import Any

import numpy as np

from bpnet.infer.decode import DecodeParams, decode
from bpnet.infer.network_input import InputPlan, plan, to_network_input
from bpnet.layout import EXPORTED_MODE
from bpnet.pose import Skeleton, parse_pose_config

IMAGE, PLAN, KEYPOINTS, SCORES, PEOPLE = "IMAGE", "PLAN", "KEYPOINTS", "SCORES", "PEOPLE"


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
        p = plan(image.shape[0], image.shape[1], s["input_shape"], s["keep_aspect_ratio_mode"])
        net = to_network_input(image, p, s["image_scale"], s["image_offset"])
        shape = np.array([p.image_h, p.image_w, p.net_h, p.net_w, p.resized_h, p.resized_w], np.int32)
        return net, shape

    def _decode(self, heat: np.ndarray, paf: np.ndarray, shape: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = InputPlan(*(int(v) for v in shape))
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

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request; every request may carry a batch (first axis)."""
        pb, s = self.pb, self.settings
        responses = []
        for request in requests:
            if self.stage == "preprocess":
                images = pb.get_input_tensor_by_name(request, IMAGE).as_numpy()
                outs = [self._preprocess(image) for image in images]
                tensors = [pb.Tensor(s["input_name"], np.stack([o[0] for o in outs])),
                           pb.Tensor(PLAN, np.stack([o[1] for o in outs]))]
            else:
                heats = pb.get_input_tensor_by_name(request, s["heatmap_name"]).as_numpy()
                pafs = pb.get_input_tensor_by_name(request, s["paf_name"]).as_numpy()
                shapes = pb.get_input_tensor_by_name(request, PLAN).as_numpy()
                outs = [self._decode(h, f, p) for h, f, p in zip(heats, pafs, shapes, strict=True)]
                tensors = [pb.Tensor(name, np.stack([o[i] for o in outs]))
                           for i, name in enumerate((KEYPOINTS, SCORES, PEOPLE))]
            responses.append(pb.InferenceResponse(output_tensors=tensors))
        return responses
