"""Why training on real photos gave AP 0: the figures of docs/real_training.md.

On the four 640x480 COCO photos of ``real_subset.MEMORISE_IDS``, converted as a user would:

1. geometry (no training): per recipe, the scale at which the training sample shows each image's
   centre person against the scale whole-image inference gives it (``adjust_network_input``), and
   how many of the labelled people the sample shows at all;
2. perfect maps (no training): the training sample's own label maps, decoded in the sample's frame
   and mapped back to the photo through the inverse of its transform, scored with COCO AP; beside
   it the inference geometry's label maps, with and without the decoder's sub-cell refinement
   (``output_upsampling_factor`` 8 vs 1);
3. the loss at the first step: the background channel's, the joints' and the PAFs' shares of
   ``0.5 * sum(label^2)`` (the loss of an all-zero prediction), and the loss of the best constant
   map (each channel its mean) that a collapsed network reaches;
4. the first training steps (``--steps``, the only part that trains): per layer group the
   gradient norm and the update-to-weight ratio ``|dw| / |w|``, the L1 term's share of the
   objective, then how much the joint heatmaps differ between the images and their maxima, for the
   issue's recipe, the same with TAO's N(0, 0.01) initialisation, and the overfit recipe; and the
   learning rate the demo schedule gives the issue's short runs.

Run: ``nice -n 15 .venv/bin/python benchmarks/real_diagnosis.py`` (a few CPU-minutes with
``--steps 10``; ``--steps 0`` skips the training part).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from real_subset import MEMORISE_IDS, coco_root, convert, make_subset, overfit_spec  # noqa: E402

from bpnet.data import augment, records  # noqa: E402
from bpnet.data.loader import SampleMaker, record_paths  # noqa: E402
from bpnet.evaluate import coco_metrics, ground_truth, to_coco_keypoints  # noqa: E402
from bpnet.infer.decode import DecodeParams, decode  # noqa: E402
from bpnet.infer.network_input import plan  # noqa: E402
from bpnet.specs import DatasetSpec, TrainSpec, load_spec  # noqa: E402
from bpnet.specs.train import FocalLossParams  # noqa: E402

# The issue's recipes and the overfit one: (name, overfit_spec geometry, input size, target_person_scale)
RECIPES = (("demo crop 128", "augmented", (128, 128), 0.75),
           ("guide crop 256", "augmented", (256, 256), 0.6),
           ("whole 256x344", "whole", (256, 344), None))


def spec_for(base: Path, recipe: tuple, **kw) -> TrainSpec:
    """The train spec of a recipe with no random draws (``training=False`` samples)."""
    name, geometry, (h, w), person_scale = recipe
    folder = base / name.replace(" ", "_")
    folder.mkdir(exist_ok=True)
    path = overfit_spec(base / "dataset" / "coco_spec.json", base / "records", folder, geometry=geometry, **kw)
    data = __import__("yaml").safe_load(path.read_text())
    data["dataloader"]["image_config"]["image_dims"] = {"height": h, "width": w}
    data["dataloader"]["pose_config"]["target_shape"] = [h // 8, w // 8]
    if person_scale is not None:
        data["dataloader"]["augmentation_config"]["spatial_aug_params"]["target_person_scale"] = person_scale
    path.write_text(__import__("yaml").safe_dump(data, sort_keys=False))
    return load_spec(path, TrainSpec)


def train_records(spec: TrainSpec) -> list[records.PoseSample]:
    import tensorflow as tf

    return [records.decode(r.numpy()) for r in tf.data.TFRecordDataset([str(p) for p in record_paths(spec)])]


def sample_transform(spec: TrainSpec, rec: records.PoseSample) -> np.ndarray:
    aug = spec.dataloader.augmentation_config
    dims = spec.dataloader.image_config.image_dims
    bbox = rec.bboxes[rec.main_index] if rec.main_index >= 0 else None
    m, _ = augment.transform(aug.spatial_aug_params, aug.spatial_augmentation_mode, dims.height, dims.width,
                             rec.height, rec.width, bbox, None)
    return m


def geometry(spec: TrainSpec, recs: list[records.PoseSample]) -> list[dict]:
    """Per sample: the sample's scale, the inference scale at the same input height, people shown."""
    dims = spec.dataloader.image_config.image_dims
    rows = []
    for rec in recs:
        m = sample_transform(spec, rec)
        inference = plan(rec.height, rec.width, (dims.height, dims.height), "adjust_network_input").scale[1]
        labelled = rec.keypoints[..., 2] > 0
        xy = augment.apply_to_points(m, rec.keypoints[..., :2])
        inside = (xy[..., 0] >= 0) & (xy[..., 0] < dims.width) & (xy[..., 1] >= 0) & (xy[..., 1] < dims.height)
        shown = int(sum((inside & labelled)[p].sum() * 2 >= labelled[p].sum() for p in range(len(rec.keypoints))))
        h = float(rec.bboxes[rec.main_index][3]) if rec.main_index >= 0 else float("nan")
        rows.append({"image": rec.image_id, "person_h": h, "train_scale": augment.scale_of(m),
                     "inference_scale": inference, "ratio": augment.scale_of(m) / inference,
                     "people_shown": shown, "people": len(rec.keypoints)})
    return rows


def perfect_map_ap(spec: TrainSpec, recs: list[records.PoseSample], gt: dict, names: list[str], category: int,
                   sigmas: np.ndarray, upsampling: int = 8) -> float:
    """AP of the samples' own label maps decoded in the sample frame and mapped back to the photo."""
    maker = SampleMaker(spec, Path(spec.dataloader.dataset_config.root_data_path), False, spec.skeleton)
    params = DecodeParams(upsampling=(upsampling, upsampling))
    detections = []
    for rec in recs:
        _, heat, paf, _ = maker.sample(rec, 0)
        inverse = np.linalg.inv(sample_transform(spec, rec))
        for person in decode(heat, paf, params, spec.dataloader.image_config.image_dims.height, spec.skeleton):
            found = person.keypoints[:, 2] > 0
            person.keypoints[found, :2] = augment.apply_to_points(inverse, person.keypoints[found, :2])
            detections.append({"image_id": rec.image_id, "category_id": category, "score": person.score,
                               "keypoints": to_coco_keypoints(person.keypoints, names, spec.skeleton)})
    return coco_metrics(gt, detections, category, sigmas, [r.image_id for r in recs])[0]["AP"]


def loss_shares(spec: TrainSpec, recs: list[records.PoseSample]) -> dict[str, float]:
    """Per image: the zero prediction's loss by part, and the best constant map's loss."""
    maker = SampleMaker(spec, Path(spec.dataloader.dataset_config.root_data_path), False, spec.skeleton)
    heats, pafs, masks = zip(*(maker.sample(r, 0)[1:] for r in recs), strict=True)
    heat, paf, mask = np.stack(heats), np.stack(pafs), np.stack(masks) / 255.0
    zero = {"background": 0.5 * float((mask[..., 0] * heat[..., -1] ** 2).sum()),
            "joints": 0.5 * float((mask * heat[..., :-1] ** 2).sum()),
            "pafs": 0.5 * float((mask * paf ** 2).sum())}
    constant = 0.5 * float((mask * (heat - heat.mean(axis=(0, 1, 2))) ** 2).sum()
                           + (mask * (paf - paf.mean(axis=(0, 1, 2))) ** 2).sum())
    n = len(recs)
    return {**{k: v / n for k, v in zero.items()}, "constant_map": constant / n,
            "joint_share_at_constant": joint_share(heat, paf, mask, None),
            "joint_share_at_constant_focal": joint_share(heat, paf, mask, FocalLossParams(use_focal_loss=True))}


def joint_share(heat: np.ndarray, paf: np.ndarray, mask: np.ndarray, focal: FocalLossParams | None) -> float:
    """The joint channels' share of the loss when the prediction is the best constant map (each
    channel its mean): what is left to learn once the background is, with plain or focal L2."""
    from bpnet.model.loss import stage_losses

    pred_heat, pred_paf = np.broadcast_to(heat.mean(axis=(0, 1, 2)), heat.shape), np.broadcast_to(
        paf.mean(axis=(0, 1, 2)), paf.shape)
    joints_only = heat.copy()
    joints_only[..., -1] = pred_heat[..., -1]  # background residual 0: the joints' part alone
    (total,), (paf_loss,) = stage_losses([pred_heat], [pred_paf], heat, paf, mask, len(heat), focal)
    (joints,), _ = stage_losses([pred_heat], [pred_paf], joints_only, paf, mask, len(heat), focal)
    return float(joints) / float(total + paf_loss)


GROUPS = {"block1_conv1": "first conv", "block4_conv3": "last backbone conv", "stage1_heat_conv": "stage 1 heat conv",
          "stage1_heat_out": "stage 1 heat out", "stage2_conv1": "stage 2 first conv", "heatmap_out": "last heat out"}


def first_steps(spec: TrainSpec, results: Path, steps: int, tao_init: bool) -> dict:
    """Per layer of GROUPS: gradient norm and |dw|/|w| per step (median over the steps), the L1
    share of the objective, and the joint heatmaps after ``steps``: max and between-image spread."""
    import keras
    import tensorflow as tf

    from bpnet.data.loader import build_dataset
    from bpnet.model.bpnet import split_outputs
    from bpnet.model.loss import stage_losses, total_loss
    from bpnet.train import Trainer

    trainer = Trainer(spec, results, key="diagnosis")
    model, optimizer = trainer.model, trainer.optimizer
    if tao_init:
        rng = np.random.default_rng(spec.random_seed)
        for layer in model.layers:
            if isinstance(layer, keras.layers.Conv2D):
                layer.kernel.assign(rng.normal(0.0, 0.01, layer.kernel.shape).astype(np.float32))
    stages = len(model.outputs) // 2
    kernels = {layer.name: layer.kernel for layer in model.layers if layer.name in GROUPS}
    batches = iter(build_dataset(spec, trainer.paths, trainer.global_batch, training=True))
    images, lab = next(batches)  # the same batch every step: the images the run memorises
    grad_norms = {n: [] for n in kernels}
    ratios = {n: [] for n in kernels}
    l1_share = []
    for _ in range(steps):
        before = {n: k.numpy() for n, k in kernels.items()}
        with tf.GradientTape() as tape:
            heats, pafs = split_outputs(model(images, training=True), stages)
            heat_l, paf_l = stage_losses(heats, pafs, lab["heatmap"], lab["paf"], lab["mask"], trainer.global_batch)
            loss = total_loss(heat_l, paf_l)
            reg = tf.add_n(model.losses) if model.losses else tf.constant(0.0)
            objective = loss + reg
        grads = tape.gradient(objective, model.trainable_variables)
        by_path = {v.path: g for v, g in zip(model.trainable_variables, grads, strict=True)}
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables, strict=True)
                                   if g is not None])
        l1_share.append(float(reg / objective))
        for n, k in kernels.items():
            grad_norms[n].append(float(tf.norm(by_path[k.path])))
            ratios[n].append(float(np.linalg.norm(k.numpy() - before[n]) / max(np.linalg.norm(before[n]), 1e-12)))
    heat = np.asarray(split_outputs(model(images, training=False), stages)[0][-1])[..., :-1]
    spread = float(np.mean([np.abs(heat[i] - heat[j]).max() for i in range(len(heat)) for j in range(i)]))
    return {"grad_norm": {GROUPS[n]: float(np.median(v)) for n, v in grad_norms.items()},
            "update_ratio": {GROUPS[n]: float(np.median(v)) for n, v in ratios.items()},
            "first_update_ratio": {GROUPS[n]: v[0] for n, v in ratios.items()},
            "l1_share": float(np.median(l1_share)), "loss": float(loss),
            "joint_max": float(heat.max()), "between_image_spread": spread}


def schedule_at(total: int) -> dict[int, float]:
    """The demo schedule's rate at a few steps of a ``total``-step run (soft start stretched)."""
    from bpnet.model.optimizer import make_schedule
    from bpnet.specs.train import LearningRateSchedule

    config = LearningRateSchedule(soft_start=0.05, annealing=0.7, base_learning_rate=1e-3, min_learning_rate=1e-6)
    schedule = make_schedule(config, total, total)
    return {s: float(schedule(s)) for s in (1, 10, 30, 73, int(0.7 * total), total)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco", type=Path, default=None, help="COCO folder (default: coco-mini-train or the repo's)")
    parser.add_argument("--steps", type=int, default=10, help="training steps of part 5 (0: skip)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        base = args.work or Path(tmp)
        dataset = make_subset(coco_root(args.coco), MEMORISE_IDS, base / "dataset", each_person=False)
        if not (base / "records" / "train-fold-000-of-001").exists():
            convert(dataset, base / "records")
        dspec = load_spec(dataset, DatasetSpec)
        specs = {r[0]: spec_for(base, r) for r in RECIPES}
        skeleton = next(iter(specs.values())).skeleton
        gt = ground_truth(dspec, skeleton)
        names, category = dspec.keypoint_names, dspec.person_category.id
        sigmas = skeleton.sigmas_for(names)
        recs = train_records(next(iter(specs.values())))
        print(f"{len(recs)} training samples from images {[r.image_id for r in recs]}")
        print("\n1. geometry: sample scale / whole-image inference scale at the same input height")
        for name, spec in specs.items():
            for row in geometry(spec, recs):
                print(f"  {name:16s} image {row['image']:>6}: centre person {row['person_h']:5.0f} px, "
                      f"scale {row['train_scale']:.3f} vs {row['inference_scale']:.3f} (x{row['ratio']:.2f}), "
                      f"{row['people_shown']}/{row['people']} labelled people in the sample")
        print("\n2. perfect maps decoded (AP on the 4 photos)")
        for name, spec in specs.items():
            refined, coarse = (perfect_map_ap(spec, recs, gt, names, category, sigmas, upsampling=u) for u in (8, 1))
            print(f"  {name:16s} sample frame mapped back: AP {refined:.3f}  (no sub-cell refinement: {coarse:.3f})")
        print("\n3. loss per image at the first step (zero prediction) and of the best constant map")
        for name, spec in specs.items():
            s = loss_shares(spec, recs)
            total = s["background"] + s["joints"] + s["pafs"]
            print(f"  {name:16s} zero prediction {total:7.1f} = background {s['background'] / total:.0%}, "
                  f"joints {s['joints'] / total:.1%}, PAFs {s['pafs'] / total:.1%}; best constant map "
                  f"{s['constant_map']:.1f} per stage, of which joints {s['joint_share_at_constant']:.1%} "
                  f"(focal L2: {s['joint_share_at_constant_focal']:.1%})")
        print("\n4. the demo schedule (Adam 1e-3, soft_start 0.05, annealing 0.7) on the issue's short runs")
        for total in (600, 2000):
            print(f"  {total} steps: " + ", ".join(f"step {s}: {r:.2g}" for s, r in schedule_at(total).items()))
        if args.steps:
            print(f"\n5. first {args.steps} steps at the base rate (soft_start 0) on one batch of the 4 images "
                  "(guide crop 256, width 0.25, 2 stages); medians over the steps")
            issue = dict(learning_rate=1e-3, stagewise=True, l1=5e-6)
            runs = {"issue: Adam 1e-3, stage-wise x2/x4, L1 5e-6": (issue, False),
                    "same, TAO init N(0, 0.01)": (issue, True),
                    "overfit recipe: Adam 1e-3, no multipliers, no L1": (dict(learning_rate=1e-3), False)}
            for label, (kw, tao) in runs.items():
                spec = spec_for(base, RECIPES[1], num_epoch=1000, width=0.25, soft_start=0.0, **kw)
                out = first_steps(spec, base / f"run{len(label)}", args.steps, tao)
                print(f"  {label}:\n    {json.dumps(out)}")


if __name__ == "__main__":
    main()
