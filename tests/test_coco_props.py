"""Property: whatever is done to a COCO file's images and annotations (types, NaN/inf, huge
values, missing and extra keys, duplicates, non-objects), dataset_convert either succeeds or
fails with ConvertError whose every problem names its image/annotation id (or list index), with
nothing written; no other exception ever escapes. Derandomized and bounded: seconds per run."""

from __future__ import annotations

import copy
import json
import math
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpnet.data import records
from bpnet.data.convert import ConvertError, ConvertSettings, convert_dataset
from bpnet.specs import DatasetSpec, load_spec
from tests.conftest import REPO

REAL = REPO / "tests/data/real_images"
IMAGES = sorted(p.name for p in REAL.glob("*.jpg"))


def base_document() -> dict:
    """The real annotations of the three images in tests/data/real_images."""
    raw = json.loads((REAL / "person_keypoints_train2017.json").read_text())
    images = [i for i in raw["images"] if i["file_name"] in IMAGES]
    ids = {i["id"] for i in images}
    return {"images": images, "annotations": [a for a in raw["annotations"] if a["image_id"] in ids],
            "categories": raw["categories"]}


BASE = base_document()
SPEC = {
    "dataset": "coco", "root_directory_path": ".",
    "train_data": {"images_root_dir_path": "images", "mask_root_dir_path": "masks",
                   "annotation_root_dir_path": "annotations.json"},
    "categories": [{**BASE["categories"][0], "num_joints": 17}],
}
SPEC["test_data"] = SPEC["train_data"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.sampled_from([0, 1, 2, -1, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, 1e308]),
    st.text(max_size=8), st.sampled_from(["", "2", "../x.jpg", "/etc/passwd", "nan"]))
values = st.one_of(scalars, st.lists(scalars, max_size=6), st.dictionaries(st.text(max_size=4), scalars, max_size=3))


@st.composite
def mutations(draw) -> tuple[dict, str]:
    """(mutated document, description of the mutation)."""
    doc = copy.deepcopy(BASE)
    section = draw(st.sampled_from(["images", "annotations"]))
    entries = doc[section]
    index = draw(st.integers(0, len(entries) - 1))
    kind = draw(st.sampled_from(["set", "delete", "element", "duplicate", "replace_entry", "extra_key"]))
    entry = entries[index]
    key = draw(st.sampled_from(sorted(entry)))
    if kind == "set":
        entry[key] = draw(values)
    elif kind == "delete":
        del entry[key]
    elif kind == "element" and isinstance(entry[key], list) and entry[key]:
        position = draw(st.integers(0, len(entry[key]) - 1))
        entry[key][position] = draw(values)
    elif kind == "duplicate":
        twin = copy.deepcopy(entries[draw(st.integers(0, len(entries) - 1))])
        if draw(st.booleans()):
            twin[key] = draw(values)
        entries.append(twin)
    elif kind == "replace_entry":
        entries[index] = draw(values)
    else:
        entry[draw(st.text(min_size=1, max_size=6))] = draw(values)
    return doc, f"{kind} {section}[{index}].{key}"


def located(problem) -> bool:
    text = str(problem)
    return (problem.image_id is not None or problem.annotation_id is not None
            or "images[" in text or "annotations[" in text or "annotation file" in text)


def run_convert(doc: object, skip_invalid: bool) -> tuple[Path, ConvertError | None, object]:
    root = Path(tempfile.mkdtemp(prefix="coco-props-"))
    (root / "images").symlink_to(REAL, target_is_directory=True)
    (root / "annotations.json").write_text(json.dumps(doc))
    (root / "spec.json").write_text(json.dumps(SPEC))
    spec = load_spec(root / "spec.json", DatasetSpec)
    try:
        return root, None, convert_dataset(spec, root / "out" / "train",
                                           ConvertSettings(generate_masks=True, skip_invalid=skip_invalid))
    except ConvertError as exc:
        return root, exc, None


@settings(max_examples=40, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutation=mutations(), skip_invalid=st.booleans())
def test_any_mutation_gives_success_or_a_located_error_and_nothing_partial(mutation, skip_invalid):
    doc, what = mutation
    root, error, summary = run_convert(doc, skip_invalid)
    try:
        if error is not None:
            assert error.problems and all(located(p) for p in error.problems), (what, error.problems)
            assert not (root / "out").exists() and not (root / "masks").exists(), what
        else:
            written = records.read_samples([root / "out" / "train-fold-000-of-001"])
            assert len(written) == summary.samples_written, what
            assert (root / "out" / "train-manifest.json").is_file()
    finally:
        shutil.rmtree(root)


def test_the_unmutated_document_converts():
    root, error, summary = run_convert(BASE, False)
    shutil.rmtree(root)
    assert error is None and summary.samples_written == 2  # the two people of 000000099293.jpg


def test_duplicate_image_ids_name_both_files_and_skip_the_id():
    doc = copy.deepcopy(BASE)
    first, second = doc["images"][0], doc["images"][1]
    second["id"] = first["id"]
    root, error, _ = run_convert(doc, False)
    shutil.rmtree(root)
    assert error is not None
    assert any(p.image_id == first["id"] and first["file_name"] in str(p) and second["file_name"] in str(p)
               for p in error.problems)


def test_top_level_list_and_non_finite_values_are_named():
    root, error, _ = run_convert([BASE], False)
    shutil.rmtree(root)
    assert error is not None and "annotations.json: the top level is a list, expected an object" in str(error)
    doc = copy.deepcopy(BASE)
    ann = next(a for a in doc["annotations"] if a["num_keypoints"])
    ann["keypoints"][4] = math.nan
    ann2 = next(a for a in doc["annotations"] if a is not ann)
    ann2["bbox"][1] = "12"
    root, error, _ = run_convert(doc, False)
    shutil.rmtree(root)
    text = str(error)
    assert f"annotation {ann['id']}: keypoints[4] NaN is not a finite number" in text
    assert f"annotation {ann2['id']}: bbox" in text and "finite numbers" in text
