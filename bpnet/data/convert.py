"""dataset_convert: COCO person keypoints -> sharded TFRecords (+ loss masks).

Train mode with ``duplicate_data_with_each_person_as_center`` writes one sample per person who
passes ``data_filtering_params`` (that person first, every labeled person in the image with it),
so person-centric augmentation sees each such person as the person of interest once. Test mode
(and train mode without duplication) writes one sample per image.

Nothing half-written can pass for a dataset: the input is validated before any output is made,
shards are written under temporary names and renamed together, and the manifest
(``<output>-manifest.json``: shard names, sizes, sha256 and the run summary) comes last.
"""

from __future__ import annotations

import logging
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from bpnet.artifacts import (
    atomic_output,
    atomic_write_bytes,
    build_manifest,
    read_manifest,
    verify_files,
    write_manifest,
)
from bpnet.data import masks, records
from bpnet.data.coco import ImageEntry, InputProblem, Person, load_coco
from bpnet.pose import dataset_to_model_keypoints
from bpnet.preprocess import read_image
from bpnet.specs.dataset import DataFilteringParams, DatasetSpec
from bpnet.specs.loader import write_resolved_spec

log = logging.getLogger(__name__)

Mode = Literal["train", "test"]
DROP_RULES = ("too_few_keypoints", "too_short", "too_narrow", "too_close")


class ConvertError(RuntimeError):
    """The input has problems; ``problems`` lists each with its ids."""

    def __init__(self, problems: list[InputProblem]):
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{len(problems)} problem(s) in the input data:\n{shown}{more}")


@dataclass
class ConvertOptions:
    mode: Mode = "train"
    generate_masks: bool = False
    check_files: bool = False
    skip_invalid: bool = False
    num_shards: int = 1


@dataclass
class ConvertSummary:
    mode: str
    images_read: int = 0
    images_skipped_invalid: int = 0
    images_written: int = 0
    samples_written: int = 0
    persons_total: int = 0
    persons_kept: int = 0
    persons_dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_RULES, 0))
    crowd_regions: int = 0
    masked_persons: int = 0
    masks_written: int = 0
    masks_missing: int = 0
    shards: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        dropped = ", ".join(f"{k} {v}" for k, v in self.persons_dropped.items())
        return [
            f"mode: {self.mode}",
            f"images read: {self.images_read} (skipped as invalid: {self.images_skipped_invalid})",
            f"images written: {self.images_written}; samples written: {self.samples_written}",
            f"persons: {self.persons_total} annotated, {self.persons_kept} kept as centres",
            f"persons dropped by rule: {dropped}",
            f"crowd regions: {self.crowd_regions}; persons masked out: {self.masked_persons}; "
            f"masks written: {self.masks_written}; images without a mask: {self.masks_missing}",
            f"shards: {', '.join(self.shards)}",
        ]


def select_centers(persons: list[Person], params: DataFilteringParams) -> tuple[list[int], Counter]:
    """Indices (into ``persons``) of the persons a sample is centred on, and drops per rule.

    Rules, in order, first failing rule counts: fewer than ``min_acceptable_kpts`` labeled
    keypoints; bbox shorter than ``min_acceptable_height``; narrower than
    ``min_acceptable_width``; centre closer than ``min_acceptable_interperson_dist_ratio`` x the
    bbox height of an already selected person. Crowd regions are never centres nor counted.
    """
    kept: list[int] = []
    dropped: Counter = Counter()
    for i, person in enumerate(persons):
        if person.iscrowd:
            continue
        _, _, w, h = person.bbox
        if person.num_labeled < params.min_acceptable_kpts:
            dropped["too_few_keypoints"] += 1
        elif h < params.min_acceptable_height:
            dropped["too_short"] += 1
        elif w < params.min_acceptable_width:
            dropped["too_narrow"] += 1
        elif any(_too_close(person, persons[k], params.min_acceptable_interperson_dist_ratio) for k in kept):
            dropped["too_close"] += 1
        else:
            kept.append(i)
    return kept, dropped


def _too_close(person: Person, selected: Person, ratio: float) -> bool:
    (cx, cy), (sx, sy) = person.center, selected.center
    return float(np.hypot(cx - sx, cy - sy)) < ratio * selected.bbox[3]


def output_paths(output: str | Path) -> tuple[Path, Path]:
    """(manifest, resolved spec) written beside the shards of ``output``."""
    output = Path(output)
    return output.with_name(output.name + "-manifest.json"), output.with_name(output.name + "-dataset_spec.json")


def convert_dataset(spec: DatasetSpec, output: str | Path, options: ConvertOptions) -> ConvertSummary:
    """Run dataset_convert; raises ConvertError (before writing anything) on invalid input."""
    output = Path(output).absolute()
    split = spec.split(options.mode)
    category = spec.person_category
    dataset_to_model_keypoints(np.zeros((1, category.num_joints, 3)), category.keypoints)  # names usable?
    data = load_coco(spec.under_root(split.annotation_root_dir_path), category, spec.visibility_flags)
    summary = ConvertSummary(mode=options.mode, images_read=len(data.images))
    problems = list(data.problems) + _check_files(spec, data.images, options)
    if problems:
        summary.problems = [str(p) for p in problems]
        if not options.skip_invalid or any(p.image_id is None and p.annotation_id is None for p in problems):
            raise ConvertError(problems)
        for p in problems:
            log.warning("skipping: %s", p)
    bad = {p.image_id for p in problems if p.image_id is not None}
    images = [im for im in data.images if im.image_id not in bad]
    summary.images_skipped_invalid = len(data.images) - len(images)

    manifest_path, spec_path = output_paths(output)
    manifest_path.unlink(missing_ok=True)  # from here on, the old output no longer counts as finished
    samples: list[records.PoseSample] = []
    for image in tqdm(images, desc=f"dataset_convert ({options.mode})", unit="img", leave=False, disable=None):
        samples.extend(_image_samples(spec, image, options, summary))
    if summary.masks_missing and options.mode == "train":
        log.warning("%d image(s) have no mask: their unlabeled people and crowds will be trained as background "
                    "(run with --generate_masks)", summary.masks_missing)
    summary.images_written = len({s.image_id for s in samples})
    summary.samples_written = len(samples)
    summary.shards, shard_samples = _write_shards(samples, output, options.num_shards)
    write_resolved_spec(spec, spec_path)
    manifest = build_manifest(output.parent, files=summary.shards, metadata={
        "summary": asdict(summary), "options": asdict(options), "dataset_spec": spec_path.name,
        "shard_samples": shard_samples})
    write_manifest(manifest_path, manifest)
    return summary


def _check_files(spec: DatasetSpec, images: list[ImageEntry], options: ConvertOptions) -> list[InputProblem]:
    """Images must exist; with --check_files they must also decode at the annotated size, and
    (unless masks are being generated now) their masks must exist."""
    split = spec.split(options.mode)
    problems = []
    for image in images:
        path = spec.under_root(split.images_root_dir_path) / image.file_name
        if not path.is_file():
            problems.append(InputProblem(f"image file {path} is missing", image.image_id))
            continue
        if not options.check_files:
            continue
        try:
            pixels = read_image(path)
        except ValueError:
            problems.append(InputProblem(f"image file {path} is corrupt (cannot be decoded)", image.image_id))
            pixels = None
        if pixels is not None and pixels.shape[:2] != (image.height, image.width):
            problems.append(InputProblem(
                f"image file {path} is {pixels.shape[1]}x{pixels.shape[0]}, annotated as "
                f"{image.width}x{image.height}", image.image_id))
        mask = spec.under_root(split.mask_root_dir_path) / mask_name(image)
        if not options.generate_masks and not mask.is_file():
            problems.append(InputProblem(f"mask file {mask} is missing", image.image_id))
    return problems


def mask_name(image: ImageEntry) -> str:
    return str(Path(image.file_name).with_suffix(".png"))


def _image_samples(spec: DatasetSpec, image: ImageEntry, options: ConvertOptions,
                   summary: ConvertSummary) -> list[records.PoseSample]:
    split = spec.split(options.mode)
    params = spec.data_filtering_params
    persons = image.persons
    summary.persons_total += sum(not p.iscrowd for p in persons)
    summary.crowd_regions += sum(p.iscrowd for p in persons)
    summary.masked_persons += sum(not p.iscrowd and masks.is_ignored(p, params.min_acceptable_kpts) for p in persons)
    mask_rel = str(Path(split.mask_root_dir_path) / mask_name(image))
    mask_file = spec.under_root(mask_rel)
    if options.generate_masks:
        mask = masks.ignore_mask(persons, image.height, image.width, params.min_acceptable_kpts)
        atomic_write_bytes(mask_file, masks.encode_png(mask))
        summary.masks_written += 1
        ignored = int(np.count_nonzero(mask == masks.MASK_IGNORE))
    elif mask_file.is_file():
        ignored = -1  # a mask made earlier: unknown content, the loader must read it
    else:
        mask_rel, ignored = "", 0
        summary.masks_missing += 1

    labeled = [p for p in persons if not p.iscrowd and p.num_labeled > 0]
    names = spec.person_category.keypoints
    keypoints = dataset_to_model_keypoints(np.stack([p.keypoints for p in labeled]), names) if labeled \
        else np.zeros((0, 18, 3), np.float32)
    bboxes = np.asarray([p.bbox for p in labeled], np.float32).reshape(-1, 4)

    def sample(order: list[int], main_index: int) -> records.PoseSample:
        return records.PoseSample(
            image_id=image.image_id, filename=str(Path(split.images_root_dir_path) / image.file_name),
            mask_filename=mask_rel, height=image.height, width=image.width, dataset=spec.dataset,
            keypoints=keypoints[order], bboxes=bboxes[order], main_index=main_index, mask_ignored=ignored)

    if options.mode == "test" or not spec.duplicate_data_with_each_person_as_center:
        return [sample(list(range(len(labeled))), -1)]
    kept, dropped = select_centers(labeled, params)
    summary.persons_dropped = {k: summary.persons_dropped[k] + dropped[k] for k in DROP_RULES}
    # Persons with no labeled keypoint never reach select_centers: they fail the keypoint rule.
    summary.persons_dropped["too_few_keypoints"] += sum(not p.iscrowd and p.num_labeled == 0 for p in persons)
    summary.persons_kept += len(kept)
    return [sample([k] + [i for i in range(len(labeled)) if i != k], 0) for k in kept]


def _write_shards(samples: list[records.PoseSample], output: Path, num_shards: int
                  ) -> tuple[list[str], dict[str, int]]:
    """Write contiguous chunks under temporary names; all are renamed into place only once every
    shard is complete (ExitStack unwinds the atomic outputs together). Stale shards are removed."""
    import tensorflow as tf

    names = records.shard_names(output.name, num_shards)
    bounds = np.linspace(0, len(samples), num_shards + 1).astype(int)
    with ExitStack() as stack:
        for name, lo, hi in zip(names, bounds[:-1], bounds[1:], strict=True):
            tmp = stack.enter_context(atomic_output(output.parent / name))
            with tf.io.TFRecordWriter(str(tmp)) as writer:
                for s in samples[lo:hi]:
                    writer.write(records.encode(s))
    for stale in output.parent.glob(output.name + "-fold-*"):
        if stale.name not in names:
            stale.unlink()
    return names, {name: int(hi - lo) for name, lo, hi in zip(names, bounds[:-1], bounds[1:], strict=True)}


def verified_shards(shard_paths: list[str | Path]) -> int:
    """Check the shards against their dataset_convert manifests (the training input does this);
    returns the number of samples they hold (from the manifests: no second read of the records)."""
    paths = [Path(p) for p in shard_paths]
    total = 0
    for prefix in sorted({records.shard_prefix(p) for p in paths}):
        manifest_path, _ = output_paths(prefix)
        manifest = read_manifest(manifest_path)
        listed = {e["path"] for e in manifest["files"]}
        missing = [p.name for p in paths if records.shard_prefix(p) == prefix and p.name not in listed]
        if missing:
            raise FileNotFoundError(f"{manifest_path}: does not list {missing}")
        verify_files(manifest_path.parent, manifest)
        counts = manifest["metadata"]["shard_samples"]
        total += sum(counts[p.name] for p in paths if records.shard_prefix(p) == prefix)
    return total
