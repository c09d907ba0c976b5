"""dataset_convert on the synthetic dataset: counts, masks, records, bad input, atomic output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from bpnet.artifacts import ArtifactError
from bpnet.cli import main
from bpnet.data import records
from bpnet.data.convert import ConvertError, ConvertSettings, convert_dataset, verified_shards
from bpnet.pose import BPNET_SKELETON
from bpnet.specs import DatasetSpec, load_spec
from bpnet.specs.dataset import DataFilteringParams
from tests.conftest import real_dataset


@pytest.fixture
def dataset(synth_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session's synthetic dataset (tests may damage it)."""
    root = tmp_path / "data"
    shutil.copytree(synth_dir, root, ignore=shutil.ignore_patterns("*_mask2017"))  # other tests' masks
    return root


def spec_of(root: Path, **changes) -> DatasetSpec:
    spec = load_spec(root / "coco_spec.json", DatasetSpec)
    return spec.model_copy(update=changes)


def expected_centres(ann_file: Path, rule: str = "tao", min_h=32, min_w=32, min_kpts=5, ratio=0.3) -> dict[int, int]:
    """Persons kept as centres per image, computed straight from the raw COCO JSON: TAO's rules
    (as its coco_dataset.py has them) or the bbox rules."""
    raw = json.loads(ann_file.read_text())
    per_image: dict[int, int] = {}
    for image in raw["images"]:
        anns = [a for a in raw["annotations"] if a["image_id"] == image["id"]]
        kept: list[tuple[float, float, float]] = []
        for ann in anns:
            labeled = sum(1 for v in (ann.get("keypoints") or [])[2::3] if v > 0)
            if ann["iscrowd"] or labeled == 0 or labeled < min_kpts:
                continue
            x, y, w, h = ann["bbox"]
            if rule == "tao" and ann["area"] < min_w * min_h or rule == "bbox" and (h < min_h or w < min_w):
                continue
            cx, cy = x + w / 2, y + h / 2
            if any(np.hypot(cx - px, cy - py) < ratio * scale for px, py, scale in kept):
                continue
            kept.append((cx, cy, max(anns[-1]["bbox"][2:]) if rule == "tao" else h))  # TAO: the last annotation's
        per_image[image["id"]] = len(kept)
    return per_image


def centres_written(out: Path) -> dict[int, int]:
    got: dict[int, int] = {}
    for s in records.read_samples([out.with_name(out.name + "-fold-000-of-001")]):
        got[s.image_id] = got.get(s.image_id, 0) + 1
    return got


@pytest.mark.parametrize("rule", ["tao", "bbox"])
def test_train_records_match_filter_rules(dataset, tmp_path, rule):
    out = tmp_path / "out" / "train"
    summary = convert_dataset(spec_of(dataset, data_filtering_params=DataFilteringParams(center_filter=rule)), out,
                              ConvertSettings(generate_masks=True))
    expected = expected_centres(dataset / "annotations/person_keypoints_train2017.json", rule)
    assert centres_written(out) == {k: v for k, v in expected.items() if v}
    assert summary.persons_kept == summary.samples_written == sum(expected.values())
    assert sum(summary.persons_dropped.values()) + summary.persons_kept == summary.persons_total
    assert summary.persons_dropped["too_close"] > 0 and summary.persons_dropped["too_few_keypoints"] > 0




@pytest.mark.parametrize("rule", ["tao", "bbox"])
def test_real_coco_counts_match_an_independent_computation(synth_dir, tmp_path, rule):
    root = real_dataset(tmp_path / "real")
    shutil.copy(synth_dir / "coco_spec.json", root / "coco_spec.json")
    spec = spec_of(root, data_filtering_params=DataFilteringParams(center_filter=rule))
    summary = convert_dataset(spec, tmp_path / "train", ConvertSettings(generate_masks=True))
    expected = expected_centres(root / "annotations/person_keypoints_train2017.json", rule)
    assert centres_written(tmp_path / "train") == {k: v for k, v in expected.items() if v}
    assert summary.samples_written == sum(expected.values()) == {"tao": 49, "bbox": 42}[rule]


def test_each_duplicate_is_centred_on_a_different_person(dataset, tmp_path):
    out = tmp_path / "train"
    convert_dataset(spec_of(dataset), out, ConvertSettings(generate_masks=True))
    samples = records.read_samples([out.with_name("train-fold-000-of-001")])
    by_image: dict[int, list] = {}
    for s in samples:
        assert s.main_index == 0 and s.keypoints.shape[1:] == (18, 3)
        assert (dataset / s.filename).is_file() and (dataset / s.mask_filename).is_file()
        by_image.setdefault(s.image_id, []).append(s)
    for group in by_image.values():
        centres = {tuple(np.round(s.bboxes[0], 2)) for s in group}
        assert len(centres) == len(group)
        assert all(len(s.keypoints) == len(group[0].keypoints) for s in group)


def test_records_hold_the_18_joint_layout_with_a_derived_neck(dataset, tmp_path):
    out = tmp_path / "val"
    convert_dataset(spec_of(dataset), out, ConvertSettings(mode="test"))
    coco = COCO(str(dataset / "annotations/person_keypoints_val2017.json"))
    samples = records.read_samples([out.with_name("val-fold-000-of-001")])
    assert len(samples) == len(coco.getImgIds())
    neck, lsh, rsh = (BPNET_SKELETON.joints.index(n) for n in ("neck", "left_shoulder", "right_shoulder"))
    checked = 0
    for s in samples:
        assert s.main_index == -1
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=s.image_id)) if not a["iscrowd"] and a["num_keypoints"]]
        assert len(s.keypoints) == len(anns)
        for person in s.keypoints:
            if person[lsh, 2] > 0 and person[rsh, 2] > 0:
                assert np.allclose(person[neck, :2], (person[lsh, :2] + person[rsh, :2]) / 2)
                checked += 1
            else:
                assert person[neck, 2] == 0
    assert checked > 0


@pytest.mark.parametrize("rule", ["unlabeled", "below_min_kpts"])
def test_masks_cover_exactly_unlabeled_people_and_crowds(dataset, tmp_path, rule):
    import cv2

    spec = spec_of(dataset, data_filtering_params=DataFilteringParams(mask_rule=rule))
    convert_dataset(spec, tmp_path / "train", ConvertSettings(generate_masks=True))
    coco = COCO(str(dataset / "annotations/person_keypoints_train2017.json"))
    crowd_cut = 0
    for image in coco.loadImgs(coco.getImgIds()):
        shape = (image["height"], image["width"])
        crowd, unlabeled, labeled = np.zeros(shape, bool), np.zeros(shape, bool), np.zeros(shape, bool)
        floor = 5 if rule == "below_min_kpts" else 1
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image["id"], iscrowd=None)):
            region = coco.annToMask(ann).astype(bool)
            if ann["iscrowd"]:
                crowd |= region
            elif ann["num_keypoints"] < floor:
                unlabeled |= region
            else:
                labeled |= region
        if rule == "unlabeled":  # TAO: the labeled people inside a crowd region keep their loss
            crowd_cut += int((crowd & labeled).sum())
            crowd &= ~labeled
        mask = cv2.imread(str(dataset / "train_mask2017" / image["file_name"].replace(".jpg", ".png")),
                          cv2.IMREAD_UNCHANGED)
        assert set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask == 0, crowd | unlabeled), image["id"]
    assert rule != "unlabeled" or crowd_cut > 0  # the synthetic data has people overlapping crowds


def test_without_duplication_one_record_per_image_with_a_centre(dataset, tmp_path):
    out = tmp_path / "train"
    summary = convert_dataset(spec_of(dataset, duplicate_data_with_each_person_as_center=False,
                                      data_filtering_params=DataFilteringParams()), out, ConvertSettings())
    expected = expected_centres(dataset / "annotations/person_keypoints_train2017.json")
    assert centres_written(out) == {k: 1 for k, v in expected.items() if v}  # as TAO: first centre only
    assert summary.persons_kept == summary.samples_written
    assert all(s.main_index == 0 for s in records.read_samples([out.with_name("train-fold-000-of-001")]))


def test_shards_manifest_and_stale_shards(dataset, tmp_path):
    out = tmp_path / "train"
    three = convert_dataset(spec_of(dataset), out, ConvertSettings(num_shards=3))
    assert three.shards == ["train-fold-000-of-003", "train-fold-001-of-003", "train-fold-002-of-003"]
    paths = [tmp_path / n for n in three.shards]
    assert verified_shards(paths) == len(records.read_samples(paths)) == three.samples_written
    assert verified_shards(paths[:1]) == len(records.read_samples(paths[:1]))
    one = convert_dataset(spec_of(dataset), out, ConvertSettings(num_shards=1))
    assert sorted(p.name for p in tmp_path.glob("train-fold-*")) == one.shards
    assert json.loads((tmp_path / "train-dataset_spec.json").read_text())["dataset"] == "coco"
    (tmp_path / "train-fold-000-of-001").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        verified_shards([tmp_path / "train-fold-000-of-001"])


def _damage(root: Path) -> dict:
    ann_file = root / "annotations/person_keypoints_train2017.json"
    raw = json.loads(ann_file.read_text())
    images = raw["images"]
    anns = raw["annotations"]
    (root / "train2017" / images[0]["file_name"]).unlink()  # missing image
    (root / "train2017" / images[1]["file_name"]).write_bytes(b"not a jpeg")  # corrupt image
    anns[0]["image_id"] = 999999  # unknown image
    bad = {"missing": images[0]["id"], "corrupt": images[1]["id"], "unknown_image_ann": anns[0]["id"]}
    victims = [a for a in anns if a["image_id"] not in (images[0]["id"], images[1]["id"], 999999)]
    victims[0]["keypoints"] = victims[0]["keypoints"][:-3]
    victims[5]["category_id"] = 7
    b = victims[10]["bbox"]
    victims[10]["bbox"] = [b[0], b[1], 5000, b[3]]
    bad.update(short=victims[0]["id"], category=victims[5]["id"], bbox=victims[10]["id"])
    ann_file.write_text(json.dumps(raw))
    return bad


def test_bad_input_is_reported_with_ids_and_nothing_is_written(dataset, tmp_path, caplog):
    bad = _damage(dataset)
    out = tmp_path / "out" / "train"
    code = main(["dataset_convert", "-d", str(dataset / "coco_spec.json"), "-o", str(out), "--check_files",
                 "--generate_masks"])
    assert code == 1
    text = caplog.text
    assert f"image {bad['missing']}: image file" in text and "is missing" in text
    assert f"image {bad['corrupt']}: " in text and "cannot decode image (truncated, corrupt or not an image)" in text
    assert f"annotation {bad['unknown_image_ann']}: refers to unknown image id 999999" in text
    assert f"annotation {bad['short']}: keypoints has 48 values, expected 51" in text
    assert f"annotation {bad['category']}: refers to unknown category id 7" in text
    assert f"annotation {bad['bbox']}: bbox" in text and "lies outside" in text
    assert not out.parent.exists() or not list(out.parent.iterdir())
    assert not (dataset / "train_mask2017").exists()


def test_skip_invalid_counts_and_continues(dataset, tmp_path):
    _damage(dataset)
    spec = spec_of(dataset)
    with pytest.raises(ConvertError):
        convert_dataset(spec, tmp_path / "train", ConvertSettings(check_files=True, generate_masks=True))
    summary = convert_dataset(spec, tmp_path / "train",
                              ConvertSettings(check_files=True, generate_masks=True, skip_invalid=True))
    assert summary.images_skipped_invalid == 5  # missing, corrupt, and three with a bad annotation
    assert summary.samples_written > 0 and len(summary.problems) == 6


def test_failure_while_writing_leaves_no_shard_and_no_manifest(dataset, tmp_path, monkeypatch):
    out = tmp_path / "train"
    convert_dataset(spec_of(dataset), out, ConvertSettings(num_shards=2))
    calls = {"n": 0}
    real_encode = records.encode

    def failing_encode(sample):
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError("disk full")
        return real_encode(sample)

    monkeypatch.setattr(records, "encode", failing_encode)
    with pytest.raises(OSError, match="disk full"):
        convert_dataset(spec_of(dataset), out, ConvertSettings(num_shards=3))
    assert not (tmp_path / "train-manifest.json").exists()  # the previous output no longer counts
    assert not list(tmp_path.glob("train-fold-*-of-003")) and not list(tmp_path.glob(".*tmp"))


def test_check_files_requires_masks_unless_generated(dataset, tmp_path):
    with pytest.raises(ConvertError, match="mask file .* is missing"):
        convert_dataset(spec_of(dataset), tmp_path / "t", ConvertSettings(check_files=True))
    convert_dataset(spec_of(dataset), tmp_path / "t", ConvertSettings(generate_masks=True))
    convert_dataset(spec_of(dataset), tmp_path / "t", ConvertSettings(check_files=True))


def test_synth_is_deterministic_and_rich(synth_dir, tmp_path):
    from bpnet.data.synth import generate

    generate(tmp_path / "a", seed=7, train_images=24, val_images=8, hard_scenes=True)
    for rel in ("annotations/person_keypoints_train2017.json", "train2017/000000000003.jpg"):
        assert (tmp_path / "a" / rel).read_bytes() == (synth_dir / rel).read_bytes()
    generate(tmp_path / "b", seed=8, train_images=24, val_images=8, hard_scenes=True)
    image = "train2017/000000000003.jpg"
    assert (tmp_path / "b" / image).read_bytes() != (synth_dir / image).read_bytes()
    anns = json.loads((synth_dir / "annotations/person_keypoints_train2017.json").read_text())["annotations"]
    flags = [v for a in anns for v in a["keypoints"][2::3]]
    assert any(a["iscrowd"] for a in anns) and any(not a["iscrowd"] and a["num_keypoints"] == 0 for a in anns)
    assert flags.count(1) > 0 and flags.count(2) > 0 and flags.count(0) > 0
    assert any(isinstance(a["segmentation"], list) for a in anns)
    assert any(isinstance(a["segmentation"], dict) for a in anns)


def test_demo_scenes_are_plain_whole_figures(tmp_path):
    """The default (the demo's) scenes: 1-3 people per image, no crowds, every keypoint labeled
    and inside the image, and the background flat (the figures are the only structure)."""
    import cv2

    from bpnet.data.synth import generate

    generate(tmp_path, seed=3, train_images=12, val_images=2)
    doc = json.loads((tmp_path / "annotations/person_keypoints_train2017.json").read_text())
    sizes = {im["id"]: (im["width"], im["height"]) for im in doc["images"]}
    per_image = np.bincount([a["image_id"] for a in doc["annotations"]], minlength=max(sizes) + 1)[list(sizes)]
    assert per_image.min() >= 1 and per_image.max() <= 3 and per_image.max() > 1
    for ann in doc["annotations"]:
        assert not ann["iscrowd"] and ann["num_keypoints"] == 17
        kps = np.array(ann["keypoints"]).reshape(17, 3)
        w, h = sizes[ann["image_id"]]
        assert (kps[:, 0] >= 0).all() and (kps[:, 0] < w).all() and (kps[:, 1] >= 0).all() and (kps[:, 1] < h).all()
    image = cv2.imread(str(tmp_path / "train2017" / doc["images"][0]["file_name"]))
    corner = image[:12, :12].reshape(-1, 3).astype(float)
    assert corner.std(axis=0).max() < 8  # sensor noise only


def test_file_names_cannot_escape_the_dataset_folders(dataset, tmp_path):
    ann_file = dataset / "annotations/person_keypoints_train2017.json"
    raw = json.loads(ann_file.read_text())
    raw["images"][0]["file_name"] = "../../outside.jpg"
    ann_file.write_text(json.dumps(raw))
    with pytest.raises(ConvertError, match=rf"image {raw['images'][0]['id']}: file_name: unsafe artifact path"):
        convert_dataset(spec_of(dataset), tmp_path / "train", ConvertSettings(generate_masks=True))


def test_outputs_are_readable_by_other_users(dataset, tmp_path):
    import stat

    convert_dataset(spec_of(dataset), tmp_path / "train", ConvertSettings(generate_masks=True))
    mode = stat.S_IMODE((tmp_path / "train-fold-000-of-001").stat().st_mode)
    assert mode & stat.S_IROTH and mode & stat.S_IRGRP
