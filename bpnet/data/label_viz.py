"""Draw generated labels over their training images, so a person can check them by eye."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bpnet.artifacts import atomic_write_bytes
from bpnet.data.loader import build_dataset, record_paths
from bpnet.layout import LABEL_SAMPLES_DIR
from bpnet.preprocess import denormalize
from bpnet.specs.train import TrainSpec


def render(image: np.ndarray, heatmap: np.ndarray, paf: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One BGR panel: image with joint heatmaps (green) and PAF magnitude (red); ignored mask dark."""
    h, w = image.shape[:2]

    def up(a: np.ndarray) -> np.ndarray:
        return cv2.resize(np.clip(a, 0, 1).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)

    joints = up(heatmap[..., :-1].max(axis=-1))
    limbs = up(np.linalg.norm(paf.reshape(*paf.shape[:2], -1, 2), axis=-1).max(axis=-1))
    keep = up(mask[..., 0])
    out = image.astype(np.float32) * (0.35 + 0.65 * keep[..., None])
    out[..., 1] = np.maximum(out[..., 1], 255 * joints)
    out[..., 2] = np.maximum(out[..., 2], 255 * limbs * 0.8)
    return np.clip(out, 0, 255).astype(np.uint8)


def dump_samples(spec: TrainSpec, results_dir: str | Path, count: int) -> list[Path]:
    """Write ``count`` augmented training samples with their labels to results_dir/label_samples."""
    out_dir = Path(results_dir) / LABEL_SAMPLES_DIR
    dataset = build_dataset(spec, record_paths(spec), batch_size=1, training=True, repeat=False)
    norm = spec.dataloader.normalization_params
    written = []
    for k, (images, labels) in enumerate(dataset.take(count)):
        rgb = denormalize(images[0].numpy(), norm.image_scale, norm.image_offset)
        mask = (labels["mask"][0].numpy() + norm.mask_offset[0]) * norm.mask_scale[0] / 255.0
        panel = render(np.clip(rgb, 0, 255)[..., ::-1], labels["heatmap"][0].numpy(), labels["paf"][0].numpy(), mask)
        ok, buf = cv2.imencode(".jpg", panel)
        path = out_dir / f"sample_{k:04d}.jpg"
        atomic_write_bytes(path, buf.tobytes())
        written.append(path)
    return written
