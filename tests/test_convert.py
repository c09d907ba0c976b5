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
from bpnet.data.convert import ConvertError, ConvertOptions, convert_dataset, verified_shards
from bpnet.pose import BPNET_SKELETON
from bpnet.specs import DatasetSpec, load_spec


@pytest.fixture
def dataset(synth_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session's synthetic dataset (tests may damage it)."""
    root = tmp_path / "data"
    shutil.copytree(synth_dir, root)
    return root


def spec_of(root: Path, **changes) -> DatasetSpec:
    spec = load_spec(root / "coco_spec.json", DatasetSpec)
    return spec.model_copy(update=changes)


def expected_centres(ann_file: Path, min_h=32, min_w=32, min_kpts=5, ratio=0.3) -> dict[int, int]:
    """Persons kept as centres per image, computed straight from the raw COCO JSON."""
    raw = json.loads(ann_file.read_text())
    per_image: dict[int, int] = {}
    for image in raw["images"]:
        kept: list[tuple[float, float, float]] = []
        for ann in [a for a in raw["annotations"] if a["image_id"] == image["id"]]:
            labeled = sum(1 for v in ann["keypoints"][2::3] if v > 0)
            if ann["iscrowd"] or labeled == 0 or labeled < min_kpts:
                continue
            x, y, w, h = ann["bbox"]
            if h < min_h or w < min_w:
                continue
            cx, cy = x + w / 2, y + h / 2
            if any(np.hypot(cx - px, cy - py) < ratio * ph for px, py, ph in kept):
                continue
            kept.append((cx, cy, h))
        per_image[image["id"]] = len(kept)
    return per_image


def test_train_records_match_filter_rules(dataset, tmp_path):
    out = tmp_path / "out" / "train"
    summary = convert_dataset(spec_of(dataset), out, ConvertOptions(generate_masks=True))
    expected = expected_centres(dataset / "annotations/person_keypoints_train2017.json")
    samples = records.read_samples([out.with_name("train-fold-000-of-001")])
    assert len(samples) == sum(expected.values()) == summary.samples_written
    got: dict[int, int] = {}
    for s in samples:
        got[s.image_id] = got.get(s.image_id, 0) + 1
    assert got == {k: v for k, v in expected.items() if v}
    assert summary.persons_kept == sum(expected.values())
    assert sum(summary.persons_dropped.values()) + summary.persons_kept == summary.persons_total
    assert summary.persons_dropped["too_close"] > 0 and summary.persons_dropped["too_few_keypoints"] > 0


def test_each_duplicate_is_centred_on_a_different_person(dataset, tmp_path):
    out = tmp_path / "train"
    convert_dataset(spec_of(dataset), out, ConvertOptions(generate_masks=True))
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
    convert_dataset(spec_of(dataset), out, ConvertOptions(mode="test"))
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


def test_masks_cover_exactly_unlabeled_people_and_crowds(dataset, tmp_path):
    import cv2

    convert_dataset(spec_of(dataset), tmp_path / "train", ConvertOptions(generate_masks=True))
    coco = COCO(str(dataset / "annotations/person_keypoints_train2017.json"))
    ignored_total = 0
    for image in coco.loadImgs(coco.getImgIds()):
        expected = np.zeros((image["height"], image["width"]), bool)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image["id"], iscrowd=None)):
            if ann["iscrowd"] or ann["num_keypoints"] < 5:
                expected |= coco.annToMask(ann).astype(bool)
        mask = cv2.imread(str(dataset / "train_mask2017" / image["file_name"].replace(".jpg", ".png")),
                          cv2.IMREAD_UNCHANGED)
        assert set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask == 0, expected), image["id"]
        ignored_total += int(expected.sum())
    assert ignored_total > 0


def test_without_duplication_one_record_per_image(dataset, tmp_path):
    out = tmp_path / "train"
    summary = convert_dataset(spec_of(dataset, duplicate_data_with_each_person_as_center=False), out,
                              ConvertOptions())
    assert summary.samples_written == summary.images_read
    assert all(s.main_index == -1 for s in records.read_samples([out.with_name("train-fold-000-of-001")]))


def test_shards_manifest_and_stale_shards(dataset, tmp_path):
    out = tmp_path / "train"
    three = convert_dataset(spec_of(dataset), out, ConvertOptions(num_shards=3))
    assert three.shards == ["train-fold-000-of-003", "train-fold-001-of-003", "train-fold-002-of-003"]
    paths = [tmp_path / n for n in three.shards]
    assert verified_shards(paths) == len(records.read_samples(paths)) == three.samples_written
    assert verified_shards(paths[:1]) == len(records.read_samples(paths[:1]))
    one = convert_dataset(spec_of(dataset), out, ConvertOptions(num_shards=1))
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
    assert f"image {bad['corrupt']}: image file" in text and "corrupt" in text
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
        convert_dataset(spec, tmp_path / "train", ConvertOptions(check_files=True, generate_masks=True))
    summary = convert_dataset(spec, tmp_path / "train",
                              ConvertOptions(check_files=True, generate_masks=True, skip_invalid=True))
    assert summary.images_skipped_invalid == 5  # missing, corrupt, and three with a bad annotation
    assert summary.samples_written > 0 and len(summary.problems) == 6


def test_failure_while_writing_leaves_no_shard_and_no_manifest(dataset, tmp_path, monkeypatch):
    out = tmp_path / "train"
    convert_dataset(spec_of(dataset), out, ConvertOptions(num_shards=2))
    calls = {"n": 0}
    real_encode = records.encode

    def failing_encode(sample):
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError("disk full")
        return real_encode(sample)

    monkeypatch.setattr(records, "encode", failing_encode)
    with pytest.raises(OSError, match="disk full"):
        convert_dataset(spec_of(dataset), out, ConvertOptions(num_shards=3))
    assert not (tmp_path / "train-manifest.json").exists()  # the previous output no longer counts
    assert not list(tmp_path.glob("train-fold-*-of-003")) and not list(tmp_path.glob(".*tmp"))


def test_check_files_requires_masks_unless_generated(dataset, tmp_path):
    with pytest.raises(ConvertError, match="mask file .* is missing"):
        convert_dataset(spec_of(dataset), tmp_path / "t", ConvertOptions(check_files=True))
    convert_dataset(spec_of(dataset), tmp_path / "t", ConvertOptions(generate_masks=True))
    convert_dataset(spec_of(dataset), tmp_path / "t", ConvertOptions(check_files=True))


def test_synth_is_deterministic_and_rich(synth_dir, tmp_path):
    from bpnet.data.synth import generate

    generate(tmp_path / "a", seed=7, train_images=24, val_images=8)
    for rel in ("annotations/person_keypoints_train2017.json", "train2017/000000000003.jpg"):
        assert (tmp_path / "a" / rel).read_bytes() == (synth_dir / rel).read_bytes()
    generate(tmp_path / "b", seed=8, train_images=24, val_images=8)
    image = "train2017/000000000003.jpg"
    assert (tmp_path / "b" / image).read_bytes() != (synth_dir / image).read_bytes()
    anns = json.loads((synth_dir / "annotations/person_keypoints_train2017.json").read_text())["annotations"]
    flags = [v for a in anns for v in a["keypoints"][2::3]]
    assert any(a["iscrowd"] for a in anns) and any(not a["iscrowd"] and a["num_keypoints"] == 0 for a in anns)
    assert flags.count(1) > 0 and flags.count(2) > 0 and flags.count(0) > 0
    assert any(isinstance(a["segmentation"], list) for a in anns)
    assert any(isinstance(a["segmentation"], dict) for a in anns)


def test_file_names_cannot_escape_the_dataset_folders(dataset, tmp_path):
    ann_file = dataset / "annotations/person_keypoints_train2017.json"
    raw = json.loads(ann_file.read_text())
    raw["images"][0]["file_name"] = "../../outside.jpg"
    ann_file.write_text(json.dumps(raw))
    with pytest.raises(ConvertError, match=rf"image {raw['images'][0]['id']}: file_name: unsafe artifact path"):
        convert_dataset(spec_of(dataset), tmp_path / "train", ConvertOptions(generate_masks=True))


def test_outputs_are_readable_by_other_users(dataset, tmp_path):
    import stat

    convert_dataset(spec_of(dataset), tmp_path / "train", ConvertOptions(generate_masks=True))
    mode = stat.S_IMODE((tmp_path / "train-fold-000-of-001").stat().st_mode)
    assert mode & stat.S_IROTH and mode & stat.S_IRGRP
