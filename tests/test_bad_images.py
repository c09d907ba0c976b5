"""Bad image files on every reader path (read_image, dataset_convert, inference, evaluate, train,
calibration), made at run time from the real COCO images in tests/data/real_images: a clear error
naming the file, the rest processed, a non-zero exit at the end (calibration: a warning, and it
goes on while enough images remain); convertible formats converted the
same way everywhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from bpnet.cli import main
from bpnet.data import records
from bpnet.data.convert import ConvertError, ConvertSettings, convert_dataset
from bpnet.preprocess import ImageReadError, read_image
from bpnet.specs import DatasetSpec, load_spec
from tests.conftest import REPO, write_train_spec

REAL = REPO / "tests/data/real_images"
SOURCE = REAL / "000000099293.jpg"  # 640x360, two people
CONVERTIBLE = ("gray.jpg", "cmyk.jpg", "rgba.png", "rgb16.png", "gray16.png", "jpeg_named.png", "palette.png")
BROKEN = {"empty.jpg": "image file is empty (0 bytes)", "truncated.jpg": "cannot decode image",
          "text.jpg": "cannot decode image", "tiny.png": "image is 1x1 pixels, too small"}


def make_variants(folder: Path) -> dict[str, Path]:
    """Every case of the issue, from one real photo; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    data = SOURCE.read_bytes()
    bgr = cv2.imread(str(SOURCE))
    pil = Image.open(SOURCE)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(data[: len(data) * 2 // 3])
    (folder / "text.jpg").write_text("this is not a picture\n")
    (folder / "jpeg_named.png").write_bytes(data)
    cv2.imwrite(str(folder / "tiny.png"), bgr[:1, :1])
    cv2.imwrite(str(folder / "gray.jpg"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), [cv2.IMWRITE_JPEG_QUALITY, 98])
    pil.convert("CMYK").save(folder / "cmyk.jpg", quality=98)
    cv2.imwrite(str(folder / "rgba.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(folder / "rgb16.png"), bgr.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "gray16.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257)
    pil.convert("P").save(folder / "palette.png")
    return {p.name: p for p in folder.iterdir()}


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_variants(tmp_path_factory.mktemp("variants"))


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_files_raise_one_clear_error_naming_the_file(variants, name):
    with pytest.raises(ImageReadError) as info:
        read_image(variants[name])
    assert str(info.value).startswith(str(variants[name])) and BROKEN[name] in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_and_directory_are_clear_errors(tmp_path):
    for path, why in ((tmp_path / "nope.jpg", "No such file"), (tmp_path, "Is a directory")):
        with pytest.raises(ImageReadError, match=why):
            read_image(path)


@pytest.mark.parametrize("name", CONVERTIBLE)
def test_convertible_formats_become_the_same_rgb_picture(variants, name):
    original = cv2.cvtColor(cv2.imread(str(SOURCE)), cv2.COLOR_BGR2RGB).astype(np.float32)
    pixels = read_image(variants[name])
    assert pixels.shape == original.shape and pixels.dtype == np.uint8
    if "gray" in name:  # grayscale: the same value in all three channels
        assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])
        original = np.repeat(cv2.cvtColor(original, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    if name == "palette.png":  # the palette's colours, as PIL (which made them) expands them
        original = np.asarray(Image.open(variants[name]).convert("RGB"), np.float32)
    error = np.abs(pixels.astype(np.float32) - original).mean()
    exact = name in ("rgba.png", "rgb16.png", "jpeg_named.png", "palette.png")  # alpha dropped; 16 bits to 8
    assert error == 0 if exact else error < 6, f"{name}: mean abs error {error:.2f}"


def test_reduced_decode_of_a_converted_format_matches(variants):
    assert read_image(variants["cmyk.jpg"], 8).shape == read_image(SOURCE, 8).shape == (45, 80, 3)


def real_dataset(root: Path, variants: dict[str, Path], synth_dir: Path) -> tuple[Path, dict[str, int]]:
    """A dataset whose images are the variants, each with the two real people of SOURCE."""
    raw = json.loads((REAL / "person_keypoints_train2017.json").read_text())
    source = next(i for i in raw["images"] if i["file_name"] == SOURCE.name)
    people = [a for a in raw["annotations"] if a["image_id"] == source["id"]]
    (root / "train2017").mkdir(parents=True)
    images, anns, ids = [], [], {}
    for k, name in enumerate(sorted(variants), start=1):
        shutil.copy(variants[name], root / "train2017" / name)
        ids[name] = k
        images.append({**source, "id": k, "file_name": name})
        anns += [{**a, "id": 100 * k + j, "image_id": k} for j, a in enumerate(people)]
    (root / "annotations").mkdir()
    doc = {"images": images, "annotations": anns, "categories": raw["categories"]}
    (root / "annotations/person_keypoints_train2017.json").write_text(json.dumps(doc))
    spec = json.loads((synth_dir / "coco_spec.json").read_text())
    spec["test_data"] = spec["train_data"]
    (root / "coco_spec.json").write_text(json.dumps(spec))
    return root / "coco_spec.json", ids


def test_dataset_convert_names_every_bad_image_and_writes_only_good_ones(variants, synth_dir, tmp_path, caplog):
    spec_file, ids = real_dataset(tmp_path / "data", variants, synth_dir)
    out = tmp_path / "out" / "train"
    assert main(["dataset_convert", "-d", str(spec_file), "-o", str(out)]) == 1  # no --check_files needed
    for name, why in BROKEN.items():
        assert f"image {ids[name]}: " in caplog.text and why in caplog.text, name
    assert not out.parent.exists()
    assert "or pass --skip_invalid to skip and count it" in caplog.text  # per-image problems: skippable
    spec = load_spec(spec_file, DatasetSpec)
    summary = convert_dataset(spec, out, ConvertSettings(skip_invalid=True, generate_masks=True))
    assert summary.images_skipped_invalid == len(BROKEN)
    written = {s.image_id for s in records.read_samples([out.with_name("train-fold-000-of-001")])}
    assert written == {ids[n] for n in CONVERTIBLE}
    with pytest.raises(ConvertError, match=f"image {ids['truncated.jpg']}: .*truncated.jpg: cannot decode"):
        convert_dataset(spec, out, ConvertSettings(check_files=True, generate_masks=True))


@pytest.mark.parametrize("content", ["", '{"images": [', '{"images": NaN}'])
def test_an_unreadable_annotation_file_is_named_and_not_offered_skip_invalid(variants, synth_dir, tmp_path, caplog,
                                                                             content):
    """Empty, truncated or non-JSON annotations: exit 1 naming the file; --skip_invalid (which skips
    images and annotations, not the whole file) is not suggested, with or without it."""
    spec_file, _ = real_dataset(tmp_path / "data", variants, synth_dir)
    annotations = tmp_path / "data/annotations/person_keypoints_train2017.json"
    annotations.write_text(content)
    for extra in ([], ["--skip_invalid"]):
        caplog.clear()
        assert main(["dataset_convert", "-d", str(spec_file), "-o", str(tmp_path / "out/train"), *extra]) == 1
        assert f"annotation file {annotations}" in caplog.text
        assert "--skip_invalid" not in caplog.text and "nothing was written; fix the data" in caplog.text
    assert not (tmp_path / "out").exists()


def test_check_files_never_opens_an_unsafe_file_name(variants, synth_dir, tmp_path, monkeypatch):
    spec_file, ids = real_dataset(tmp_path / "data", {"cmyk.jpg": variants["cmyk.jpg"]}, synth_dir)
    ann = tmp_path / "data/annotations/person_keypoints_train2017.json"
    doc = json.loads(ann.read_text())
    doc["images"][0]["file_name"] = str(variants["text.jpg"])  # absolute: outside the dataset
    ann.write_text(json.dumps(doc))
    opened = []
    monkeypatch.setattr("bpnet.data.convert.read_image", lambda path, ratio=1: opened.append(path))
    with pytest.raises(ConvertError, match="file_name: unsafe") as info:
        convert_dataset(load_spec(spec_file, DatasetSpec), tmp_path / "t", ConvertSettings(check_files=True))
    assert len(info.value.problems) == 1 and opened == []


def test_a_killed_run_leaves_no_temporaries_behind(variants, synth_dir, tmp_path):
    spec_file, _ = real_dataset(tmp_path / "data", {"gray.jpg": variants["gray.jpg"]}, synth_dir)
    masks = tmp_path / "data/train_mask2017"
    masks.mkdir()
    stale = [masks / ".gray.png.k3j2.tmp", tmp_path / ".train-fold-000-of-001.x9.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")  # what SIGKILL leaves of atomic_output
    keep = masks / "notes.tmp"
    keep.write_text("not ours")
    convert_dataset(load_spec(spec_file, DatasetSpec), tmp_path / "train", ConvertSettings(generate_masks=True))
    assert not any(p.exists() for p in stale) and keep.exists() and (masks / "gray.png").is_file()


def test_inference_and_evaluate_report_bad_images_and_score_the_rest(tiny_model, variants, synth_dir, tmp_path,
                                                                     caplog):
    import yaml

    model, train_spec = tiny_model
    infer_spec = tmp_path / "infer.yaml"
    infer_spec.write_text(yaml.safe_dump({"train_spec": str(train_spec), "input_shape": [64, 64]}))
    folder = tmp_path / "images"
    shutil.copytree(variants[CONVERTIBLE[0]].parent, folder)
    out = tmp_path / "inference"
    assert main(["inference", "-i", str(infer_spec), "-m", str(model), "--input_type", "dir", "--input", str(folder),
                 "-r", str(out), "-k", "tiny"]) == 1
    doc = json.loads((out / "detection.json").read_text())
    assert {Path(e["image"]).name for e in doc["errors"]} == set(BROKEN)
    assert {Path(i["image"]).name for i in doc["images"]} == set(CONVERTIBLE)
    assert all(i["width"] == 640 and i["height"] == 360 for i in doc["images"])

    spec_file, ids = real_dataset(tmp_path / "data", variants, synth_dir)
    out = tmp_path / "evaluate"
    assert main(["evaluate", "-i", str(infer_spec), "-d", str(spec_file), "-m", str(model), "-r", str(out),
                 "-k", "tiny"]) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(e["image_id"] for e in metrics["errors"]) == sorted(ids[n] for n in BROKEN)
    assert metrics["images"] == len(ids) and (out / "detections_coco.json").is_file()


def test_calibration_skips_a_bad_image_and_takes_the_next(variants, tmp_path, caplog):
    """The broken files sort first; each is skipped with a warning naming it, and the tensorfile is
    the one of the good images alone. Too few good ones is a DataError naming both settings."""
    from bpnet.deploy.calibration import build_tensorfile
    from bpnet.errors import DataError

    mixed, clean = tmp_path / "mixed", tmp_path / "clean"
    clean.mkdir()
    shutil.copytree(variants["empty.jpg"].parent, mixed, ignore=lambda _, names: set(names) - set(BROKEN))
    for k, real in enumerate(sorted(REAL.glob("*.jpg"))):  # after the broken ones by name
        for folder in (mixed, clean):
            shutil.copy(real, folder / f"z{k}.jpg")
    args = (3, 1, 64, 96, (256.0,) * 3, (0.5,) * 3)
    tensors = build_tensorfile(mixed, tmp_path / "mixed.npy", *args)
    assert np.array_equal(tensors, build_tensorfile(clean, tmp_path / "clean.npy", *args))
    skipped = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(skipped) == len(BROKEN) and all(any(f"{mixed / n}: {why}" in m for m in skipped)
                                               for n, why in BROKEN.items())
    with pytest.raises(DataError, match=r"3 usable \(.jpg/.jpeg/.png/.bmp, 4 unreadable ones skipped\), but "
                       r"cal_batches x cal_batch_size = 4 are needed") as info:
        build_tensorfile(mixed, tmp_path / "short.npy", 2, 2, *args[2:])
    assert "export.cal_batches/cal_batch_size in a run spec" in str(info.value)
    assert not (tmp_path / "short.npy").exists()


@pytest.fixture
def broken_records(synth_dir: Path, tmp_path: Path) -> tuple[Path, Path, int]:
    """A converted copy of the synthetic dataset whose first image was truncated afterwards (as by a
    disk fault or a partial sync), and a one-epoch train spec over it."""
    root = tmp_path / "data"
    shutil.copytree(synth_dir, root)
    spec = load_spec(root / "coco_spec.json", DatasetSpec)
    convert_dataset(spec, tmp_path / "records" / "train", ConvertSettings(generate_masks=True))
    image = sorted((root / "train2017").iterdir())[0]
    image.write_bytes(image.read_bytes()[:500])
    return root, tmp_path / "records", int(image.stem)


@pytest.mark.parametrize("skip", [False, True])
def test_the_input_pipeline_names_a_bad_record_or_gives_it_zero_weight(broken_records, tmp_path, skip):
    import tensorflow as tf

    from bpnet.data.loader import BadRecordError, bad_record_error, build_dataset
    from bpnet.specs import TrainSpec

    root, records_dir, image_id = broken_records
    spec = load_spec(write_train_spec(tmp_path / "train.yaml", root, records_dir, num_epoch=1,
                                      **{"dataloader.dataset_config.skip_bad_images": skip}), TrainSpec)
    dataset = build_dataset(spec, [records_dir / "train-fold-000-of-001"], 64, training=False, repeat=False)
    if not skip:
        with pytest.raises(tf.errors.OpError) as info:
            next(iter(dataset))
        error = bad_record_error(info.value)
        assert isinstance(error, BadRecordError) and str(error).startswith(f"record of image {image_id}: ")
        return
    _, labels = next(iter(dataset))
    ids = [s.image_id for s in records.read_samples([records_dir / "train-fold-000-of-001"])][:64]
    weights = labels["mask"].numpy().reshape(len(ids), -1).max(axis=1)
    assert [i for i, w in zip(ids, weights, strict=True) if w == 0] == [i for i in ids if i == image_id] != []


@pytest.mark.slow
def test_training_names_a_bad_record_and_exits_1(broken_records, tmp_path, caplog):
    root, records_dir, image_id = broken_records
    spec = write_train_spec(tmp_path / "train.yaml", root, records_dir, num_epoch=1)
    assert main(["train", "-e", str(spec), "-r", str(tmp_path / "run"), "-k", "k"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [f"record of image {image_id}: {root / 'train2017' / f'{image_id:012d}.jpg'}: "
                      "cannot decode image (truncated, corrupt or not an image)"]


@pytest.mark.slow
def test_training_skips_a_bad_record_when_asked(broken_records, tmp_path, caplog):
    root, records_dir, image_id = broken_records
    spec = write_train_spec(tmp_path / "train.yaml", root, records_dir, num_epoch=1,
                            **{"dataloader.dataset_config.skip_bad_images": True})
    assert main(["train", "-e", str(spec), "-r", str(tmp_path / "run"), "-k", "k"]) == 0
    assert f"skipping the record of image {image_id} (zero loss weight)" in caplog.text
    assert (tmp_path / "run" / "MANIFEST.json").is_file()
