"""dataset_convert: COCO person keypoints -> sharded TFRecords (+ loss masks).

Train mode with ``duplicate_data_with_each_person_as_center`` writes one sample per person who
passes ``data_filtering_params`` (that person first, every labeled person in the image with it),
so person-centric augmentation sees each such person as the person of interest once; without
duplication, as in TAO, one sample per image that has such a person, centred on the first. Test
mode writes one sample per image, centred on nobody (TAO filters test images like train images;
this project validates on every image).

Nothing half-written can pass for a dataset: the input is validated before any output is made,
shards are written under temporary names and renamed together, and the manifest
(``<output>-manifest.json``: shard names, sizes, sha256, the run summary and, per shard, the image
and mask files its records name, so a training worker can fetch only its shards' files:
``bpnet.data.partition``) comes last.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bpnet.artifacts import (
    ArtifactError,
    atomic_output,
    atomic_write_bytes,
    build_manifest,
    read_manifest,
    verify_files,
    write_manifest,
)
from bpnet.data import masks, records
from bpnet.data.coco import ImageEntry, InputProblem, Person, load_coco
from bpnet.errors import DataError
from bpnet.pose import (
    BPNET_SKELETON,
    Skeleton,
    check_dataset_keypoints,
    dataset_to_model_keypoints,
    parse_pose_config,
)
from bpnet.preprocess import read_image
from bpnet.settings import ConvertSettings
from bpnet.specs.dataset import DataFilteringParams, DatasetSpec
from bpnet.specs.loader import write_resolved_spec

log = logging.getLogger(__name__)

DROP_RULES = ("too_few_keypoints", "too_small", "too_short", "too_narrow", "too_close")
VERIFY_RATIO = 8  # every image is decoded at 1/8 scale before it is written into a record


class ConvertError(DataError, RuntimeError):
    """The input has problems; ``problems`` lists each with its ids."""

    def __init__(self, problems: list[InputProblem]):
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{len(problems)} problem(s) in the input data:\n{shown}{more}")


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

    The rules of ``params.center_filter`` (see DataFilteringParams) apply in order and the first
    failing rule counts; a centre needs at least one labeled keypoint whatever the minimum.
    ``persons`` are an image's annotations in file order, crowd regions included: crowds are
    never centres nor counted, but TAO's distance rule measures against the bbox of the image's
    last annotation, whatever it is.
    """
    kept: list[int] = []
    dropped: Counter = Counter()
    tao = params.center_filter == "tao"
    for i, person in enumerate(persons):
        if person.iscrowd:
            continue
        _, _, w, h = person.bbox
        if person.num_labeled < max(params.min_acceptable_kpts, 1):
            dropped["too_few_keypoints"] += 1
        elif tao and person.area < params.min_acceptable_width * params.min_acceptable_height:
            dropped["too_small"] += 1
        elif not tao and h < params.min_acceptable_height:
            dropped["too_short"] += 1
        elif not tao and w < params.min_acceptable_width:
            dropped["too_narrow"] += 1
        elif any(_too_close(person, persons[k], persons[-1] if tao else persons[k], params) for k in kept):
            dropped["too_close"] += 1
        else:
            kept.append(i)
    return kept, dropped


def _too_close(person: Person, selected: Person, reference: Person, params: DataFilteringParams) -> bool:
    """Centres nearer than the ratio x the reference's scale (TAO: max(w, h); bbox rule: h)."""
    (cx, cy), (sx, sy) = person.center, selected.center
    _, _, w, h = reference.bbox
    scale = max(w, h) if params.center_filter == "tao" else h
    return float(np.hypot(cx - sx, cy - sy)) < params.min_acceptable_interperson_dist_ratio * scale


def output_paths(output: str | Path) -> tuple[Path, Path]:
    """(manifest, resolved spec) written beside the shards of ``output``."""
    output = Path(output)
    return output.with_name(output.name + "-manifest.json"), output.with_name(output.name + "-dataset_spec.json")


def convert_dataset(spec: DatasetSpec, output: str | Path, options: ConvertSettings) -> ConvertSummary:
    """Run dataset_convert; raises ConvertError (before writing anything) on invalid input."""
    output = Path(output).absolute()
    split = spec.split(options.mode)
    category = spec.person_category
    skeleton = spec.skeleton
    check_dataset_keypoints(spec.keypoint_names, skeleton)  # every model joint comes from the dataset
    data = load_coco(spec.under_root(split.annotation_root_dir_path), category, spec.visibility_flags,
                     spec.category_ids)
    summary = ConvertSummary(mode=options.mode, images_read=len(data.images))
    flagged = data.bad_image_ids  # e.g. an unsafe file_name: never opened
    problems = list(data.problems) + _check_files(
        spec, [im for im in data.images if im.image_id not in flagged], options)
    if problems:
        summary.problems = [str(p) for p in problems]
        if not options.skip_invalid or any(p.image_id is None and p.annotation_id is None for p in problems):
            raise ConvertError(problems)
        for p in problems:
            log.warning("skipping: %s", p)
    bad = {p.image_id for p in problems if p.image_id is not None}
    images = [im for im in data.images if im.image_id not in bad]
    summary.images_skipped_invalid = len(data.images) - len(images)

    _check_shards(options.num_shards, len(images), "images")
    manifest_path, spec_path = output_paths(output)
    manifest_path.unlink(missing_ok=True)  # from here on, the old output no longer counts as finished
    _remove_stale_temporaries(output.parent, f".{output.name}-fold-*.tmp")
    if options.generate_masks:
        _remove_stale_temporaries(spec.under_root(spec.split(options.mode).mask_root_dir_path), ".*.png.*.tmp")
    samples: list[records.PoseSample] = []
    for image in tqdm(images, desc=f"dataset_convert ({options.mode})", unit="img", leave=False, disable=None):
        samples.extend(_image_samples(spec, skeleton, image, options, summary))
    if summary.masks_missing and options.mode == "train":
        log.warning("%d image(s) have no mask: their unlabeled people and crowds will be trained as background "
                    "(run with --generate_masks)", summary.masks_missing)
    summary.images_written = len({s.image_id for s in samples})
    summary.samples_written = len(samples)
    _check_shards(options.num_shards, len(samples), "samples")
    summary.shards, shard_samples, shard_files = _write_shards(samples, output, options.num_shards)
    write_resolved_spec(spec, spec_path)
    manifest = build_manifest(output.parent, files=summary.shards, metadata={
        "summary": asdict(summary), "options": options.model_dump(), "dataset_spec": spec_path.name,
        "shard_samples": shard_samples, "shard_files": shard_files, "skeleton": skeleton.to_config()})
    write_manifest(manifest_path, manifest)
    return summary


def _check_shards(num_shards: int, available: int, what: str) -> None:
    """Every shard must hold a sample: more shards than samples would write empty files."""
    if num_shards > max(available, 1):
        raise DataError(f"num_shards: {num_shards} — more shards than the {available} {what} to convert (each "
                        "shard must hold at least one sample); no shard was written")


def _check_files(spec: DatasetSpec, images: list[ImageEntry], options: ConvertSettings) -> list[InputProblem]:
    """Every image is decoded (at 1/8 scale: JPEG DCT scaling makes that cheap) with the decoder
    training uses, so no record can name an image training cannot read, and its size is compared
    with the annotation's. With --check_files the decode is at full size and exact, and (unless
    masks are being generated now) the masks must exist. OpenCV decodes without the GIL: one
    thread per core."""
    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        found = pool.map(lambda image: _check_image(spec, image, options), images)
        return [p for problems in tqdm(found, total=len(images), desc="checking images", unit="img", leave=False,
                                       disable=None) for p in problems]


def _check_image(spec: DatasetSpec, image: ImageEntry, options: ConvertSettings) -> list[InputProblem]:
    split = spec.split(options.mode)
    ratio = 1 if options.check_files else VERIFY_RATIO
    path = spec.under_root(split.images_root_dir_path) / image.file_name
    if not path.is_file():
        return [InputProblem(f"image file {path} is missing", image.image_id)]
    try:
        pixels = read_image(path, ratio)
    except ValueError as exc:
        return [InputProblem(str(exc), image.image_id)]
    problems = []
    height, width = pixels.shape[:2]
    # a reduced decode is ceil(side / ratio) for JPEG (DCT scaling), floor for other formats
    if height not in {image.height // ratio, -(-image.height // ratio)} \
            or width not in {image.width // ratio, -(-image.width // ratio)}:
        size = f"{width}x{height}" if ratio == 1 else f"about {width * ratio}x{height * ratio}"
        problems.append(InputProblem(
            f"image file {path} is {size}, annotated as {image.width}x{image.height}", image.image_id))
    mask = spec.under_root(split.mask_root_dir_path) / mask_name(image)
    if options.check_files and not options.generate_masks and not mask.is_file():
        problems.append(InputProblem(f"mask file {mask} is missing", image.image_id))
    return problems


def _remove_stale_temporaries(folder: Path, pattern: str) -> None:
    """Temporary files of a killed earlier run (atomic_output's ``.<name>.<random>.tmp``)."""
    if folder.is_dir():
        for stale in folder.rglob(pattern):
            log.info("removing %s (left by an interrupted run)", stale)
            stale.unlink(missing_ok=True)


def mask_name(image: ImageEntry) -> str:
    return str(Path(image.file_name).with_suffix(".png"))


def _image_samples(spec: DatasetSpec, skeleton: Skeleton, image: ImageEntry, options: ConvertSettings,
                   summary: ConvertSummary) -> list[records.PoseSample]:
    split = spec.split(options.mode)
    params = spec.data_filtering_params
    persons = image.persons
    summary.persons_total += sum(not p.iscrowd for p in persons)
    summary.crowd_regions += sum(p.iscrowd for p in persons)
    summary.masked_persons += sum(not p.iscrowd and masks.is_ignored(p, params) for p in persons)
    mask_rel = str(Path(split.mask_root_dir_path) / mask_name(image))
    mask_file = spec.under_root(mask_rel)
    if options.generate_masks:
        mask = masks.ignore_mask(persons, image.height, image.width, params)
        atomic_write_bytes(mask_file, masks.encode_png(mask))
        summary.masks_written += 1
        ignored = int(np.count_nonzero(mask == masks.MASK_IGNORE))
    elif mask_file.is_file():
        ignored = -1  # a mask made earlier: unknown content, the loader must read it
    else:
        mask_rel, ignored = "", 0
        summary.masks_missing += 1

    labeled_at = [i for i, p in enumerate(persons) if not p.iscrowd and p.num_labeled > 0]
    labeled = [persons[i] for i in labeled_at]
    keypoints = dataset_to_model_keypoints(np.stack([p.keypoints for p in labeled]), spec.keypoint_names,
                                           skeleton) if labeled else np.zeros((0, skeleton.num_joints, 3), np.float32)
    bboxes = np.asarray([p.bbox for p in labeled], np.float32).reshape(-1, 4)

    def sample(order: list[int], main_index: int) -> records.PoseSample:
        return records.PoseSample(
            image_id=image.image_id, filename=str(Path(split.images_root_dir_path) / image.file_name),
            mask_filename=mask_rel, height=image.height, width=image.width, dataset=spec.dataset,
            keypoints=keypoints[order], bboxes=bboxes[order], main_index=main_index, mask_ignored=ignored)

    if options.mode == "test":
        return [sample(list(range(len(labeled))), -1)]
    kept, dropped = select_centers(persons, params)
    if not spec.duplicate_data_with_each_person_as_center:
        kept = kept[:1]  # as TAO: one sample per image that has a centre person, centred on the first
    summary.persons_dropped = {k: summary.persons_dropped[k] + dropped[k] for k in DROP_RULES}
    summary.persons_kept += len(kept)
    centres = [labeled_at.index(k) for k in kept]
    return [sample([c] + [i for i in range(len(labeled)) if i != c], 0) for c in centres]


def _write_shards(samples: list[records.PoseSample], output: Path, num_shards: int
                  ) -> tuple[list[str], dict[str, int], dict[str, list[str]]]:
    """Write contiguous chunks under temporary names; all are renamed into place only once every
    shard is complete (ExitStack unwinds the atomic outputs together). Stale shards are removed.
    Returns the shard names, their sample counts and the files (relative to the dataset root)
    their records name."""
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
    chunks = {name: samples[lo:hi] for name, lo, hi in zip(names, bounds[:-1], bounds[1:], strict=True)}
    files = {name: sorted({f for s in chunk for f in (s.filename, s.mask_filename) if f})
             for name, chunk in chunks.items()}
    return names, {name: len(chunk) for name, chunk in chunks.items()}, files


def verified_shards(shard_paths: list[str | Path], skeleton: Skeleton | None = None,
                    read: list[str | Path] | None = None) -> int:
    """Check the shards against their dataset_convert manifests (the training input does this),
    and, given ``skeleton`` (the train spec's), that they were converted for it; returns the number
    of samples they hold (from the manifests: no second read of the records). ``read`` (default:
    all of them) are the shards this process reads, the only ones checked byte for byte: a worker
    of several holds just its own (``bpnet.data.partition``)."""
    paths = [Path(p) for p in shard_paths]
    checked = {Path(p).name for p in (paths if read is None else read)}
    total = 0
    for prefix in sorted({records.shard_prefix(p) for p in paths}):
        manifest_path, _ = output_paths(prefix)
        manifest = read_manifest(manifest_path)
        if skeleton is not None:
            _check_records_skeleton(manifest_path, manifest, skeleton)
        listed = {e["path"] for e in manifest["files"]}
        missing = [p.name for p in paths if records.shard_prefix(p) == prefix and p.name not in listed]
        if missing:
            raise ArtifactError(f"{manifest_path}: does not list {missing}")
        verify_files(manifest_path.parent, manifest, only=checked)
        counts = manifest["metadata"]["shard_samples"]
        total += sum(counts[p.name] for p in paths if records.shard_prefix(p) == prefix)
    return total


def _check_records_skeleton(manifest_path: Path, manifest: dict, skeleton: Skeleton) -> None:
    """Records hold keypoints in one skeleton's joint order: training them as another is refused."""
    recorded = manifest["metadata"].get("skeleton")  # absent: converted before skeletons were recorded
    converted = parse_pose_config(recorded, str(manifest_path)) if recorded else BPNET_SKELETON
    if converted != skeleton:
        raise DataError(f"{manifest_path}: the records were converted for the skeleton '{converted.name}' "
                        f"({converted.num_joints} joints: {list(converted.joints)}), the train spec's pose config is "
                        f"'{skeleton.name}' ({skeleton.num_joints} joints: {list(skeleton.joints)}); convert with a "
                        "dataset spec whose pose_config is the train spec's")
