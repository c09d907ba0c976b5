"""Inference: preprocessing and its inverse, the decoder, the inference and evaluate commands."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bpnet.cli import main
from bpnet.data import labels
from bpnet.data.synth import COCO_KEYPOINTS, generate
from bpnet.evaluate import to_coco_keypoints
from bpnet.infer.decode import DecodeParams, assembly_plan, decode, find_peaks
from bpnet.infer.network_input import plan, to_network_input
from bpnet.pose import BPNET_SKELETON, Skeleton, dataset_to_model_keypoints
from bpnet.preprocess import denormalize

J = {n: i for i, n in enumerate(BPNET_SKELETON.joints)}


def render(keypoints: np.ndarray, net_h: int, net_w: int) -> tuple[np.ndarray, np.ndarray]:
    """Label maps (the training label generator) for keypoints in network-input pixels."""
    return (labels.heatmaps(keypoints, net_h // 8, net_w // 8, 8, 7.0),
            labels.pafs(keypoints, BPNET_SKELETON, net_h // 8, net_w // 8, 8, 8.0, 0.24))


@pytest.mark.parametrize("mode", ["adjust_network_input", "pad_image_input", None])
@pytest.mark.parametrize("size", [(333, 517), (101, 57), (480, 640)])
def test_preprocess_inverse_within_a_pixel(mode, size):
    h, w = size
    p = plan(h, w, (368, 368), mode)
    assert p.net_h % 8 == 0 and p.net_w % 8 == 0
    rng = np.random.default_rng(0)
    for x, y in rng.uniform((5, 5), (w - 6, h - 6), size=(4, 2)):
        assert np.allclose(p.to_image(p.to_network([x, y])), [x, y])
        image = np.zeros((h, w, 3), np.uint8)
        cv2.circle(image, (round(x), round(y)), 3, (255, 255, 255), -1)
        net = denormalize(to_network_input(image, p, (256.0,) * 3, (0.5,) * 3), (256.0,) * 3, (0.5,) * 3)[..., 0]
        ys, xs = np.nonzero(net > 0.5 * net.max())
        weights = net[ys, xs]
        found = p.to_image([np.average(xs, weights=weights), np.average(ys, weights=weights)])
        assert np.hypot(*(found - [round(x), round(y)])) <= 1.0, (mode, size, x, y, found)


def test_adjust_network_input_keeps_height_and_aspect():
    p = plan(480, 640, (368, 368), "adjust_network_input")
    assert (p.net_h, p.net_w) == (368, 488)  # 368 * 640 / 480 = 490.7 -> nearest multiple of 8
    q = plan(480, 640, (368, 368), "pad_image_input")
    assert (q.net_h, q.net_w, q.resized_h, q.resized_w) == (368, 368, 276, 368)


@pytest.fixture(scope="module")
def val_set(tmp_path_factory) -> Path:
    """The demo val split (`make demo-data` uses seed 0 and 32 val images; val draws ignore the train count)."""
    root = tmp_path_factory.mktemp("val")
    generate(root, seed=0, train_images=1, val_images=32)
    return root


def test_decoding_rendered_ground_truth_gives_ap_above_095(val_set):
    """The decoder recovers the people the label generator drew, at the demo resolution."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(val_set / "annotations/person_keypoints_val2017.json"))
    results = []
    for image in coco.loadImgs(coco.getImgIds()):
        p = plan(image["height"], image["width"], (368, 368), "adjust_network_input")
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])) if not a["iscrowd"] and a["num_keypoints"]]
        kps = dataset_to_model_keypoints(np.array([a["keypoints"] for a in anns], np.float32).reshape(-1, 17, 3),
                                         COCO_KEYPOINTS, BPNET_SKELETON)
        kps[..., :2] = p.to_network(kps[..., :2])
        for person in decode(*render(kps, p.net_h, p.net_w), DecodeParams(), p.net_h):
            found = person.keypoints[:, 2] > 0
            person.keypoints[found, :2] = p.to_image(person.keypoints[found, :2])
            results.append({"image_id": image["id"], "category_id": 1, "score": person.score,
                            "keypoints": to_coco_keypoints(person.keypoints, COCO_KEYPOINTS, BPNET_SKELETON)})
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes(results), "keypoints")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] >= 0.95


def _person(cx: float, cy: float, left_dx: float = 0.0, right_dx: float = 0.0) -> np.ndarray:
    """A standing person whose left / right arm reaches left_dx / right_dx sideways."""
    kps = np.zeros((18, 3), np.float32)
    points = {"nose": (0, -70), "neck": (0, -50), "right_shoulder": (-15, -50), "left_shoulder": (15, -50),
              "right_elbow": (-15 + right_dx / 2, -25), "right_wrist": (-15 + right_dx, -5),
              "left_elbow": (15 + left_dx / 2, -30), "left_wrist": (15 + left_dx, -10),
              "right_hip": (-10, 0), "left_hip": (10, 0), "right_knee": (-10, 35), "left_knee": (10, 35),
              "right_ankle": (-10, 70), "left_ankle": (10, 70), "right_eye": (-4, -74), "left_eye": (4, -74),
              "right_ear": (-8, -71), "left_ear": (8, -71)}
    for name, (dx, dy) in points.items():
        kps[J[name]] = (cx + dx, cy + dy, 2)
    return kps


def test_crossing_limbs_stay_with_their_people():
    a, b = _person(150, 150, left_dx=50), _person(230, 150, right_dx=-50)  # the forearms cross
    heat, paf = render(np.stack([a, b]), 256, 384)
    people = decode(heat, paf, DecodeParams(), 256)
    assert len(people) == 2
    for person in people:
        truth = a if abs(person.keypoints[J["neck"], 0] - 150) < 10 else b
        assert person.num_parts == 18
        assert np.abs(person.keypoints[:, :2] - truth[:, :2]).max() <= 2.0


def test_fast_peaks_equal_full_resolution_peaks():
    rng = np.random.default_rng(3)
    # joints of one type at least two cells apart (closer ones merge into one coarse maximum)
    kps = np.stack([_person(60 + 65 * k, y, 20, -20) for k, y in enumerate(rng.uniform(90, 170, 5))])
    kps[..., :2] += rng.normal(0, 2, kps[..., :2].shape)
    heat, _ = render(kps, 256, 384)
    heat = heat + rng.uniform(0, 0.02, heat.shape).astype(np.float32)
    params = DecodeParams()
    fast = find_peaks(heat, params)
    full = cv2.resize(heat, (384, 256), interpolation=cv2.INTER_CUBIC)  # 8x, materialized
    for j in range(18):
        m = full[..., j]
        pad = np.pad(m, 1, constant_values=-np.inf)
        is_peak = (m > params.heatmap_threshold) & np.all(
            [m >= pad[1 + dy:257 + dy, 1 + dx:385 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
        ys, xs = np.nonzero(is_peak)
        expected = sorted(zip(xs.tolist(), ys.tolist(), strict=True))
        got = sorted((int(np.round(x)), int(np.round(y))) for x, y in fast.xy[fast.joint == j])  # sub-pixel: +-0.5
        assert got == expected, BPNET_SKELETON.joints[j]


def test_decoding_is_deterministic_and_follows_thresholds():
    heat, paf = render(np.stack([_person(100, 120, 20, 0), _person(250, 120, 0, -20)]), 256, 384)
    first = decode(heat, paf, DecodeParams(), 256)
    again = decode(heat, paf, DecodeParams(), 256)
    assert [p.keypoints.tolist() for p in first] == [p.keypoints.tolist() for p in again]
    assert decode(heat * 0.5, paf, DecodeParams(heatmap_threshold=0.6), 256) == []
    assert decode(heat, paf, DecodeParams(min_parts=19), 256) == []
    assert decode(heat, paf * 0.04, DecodeParams(paf_threshold=0.05), 256) == []


def test_round_trip_ap_on_real_coco_crowds():
    """Real COCO ground truth (30 images, up to 11 people, missing shoulders), rendered by the label
    generator at the geometry inference gives it, decodes back above a floor just under what was
    measured (0.912 at 368, 0.733 at 128): an accuracy regression test."""
    from benchmarks.decode_real import ANNOTATIONS, round_trip

    doc = json.loads(ANNOTATIONS.read_text())
    assert round_trip(doc, 368)[0][0] >= 0.90
    assert round_trip(doc, 128)[0][0] >= 0.72


def test_a_weak_spurious_peak_does_not_take_a_limb_from_the_true_joint():
    """A trained network's maps have ripples (0.1-0.2) beside joints, and its true limb fields fall
    short of 1. A spurious wrist at 0.15 whose segment from the elbow has a stronger field than the
    true forearm's must not take the elbow: pairs rank by the PAF score and both peaks' values."""
    person = _person(150, 150, left_dx=40)  # left elbow (185, 120), left wrist (205, 140)
    heat, paf = render(person[None], 256, 384)
    ghost = np.zeros_like(person)
    ghost[J["left_elbow"]] = person[J["left_elbow"]]
    ghost[J["left_wrist"]] = (185, 160, 2)  # straight below the elbow
    ghost_heat, ghost_paf = render(ghost[None], 256, 384)
    limb = BPNET_SKELETON.limbs.index((J["left_elbow"], J["left_wrist"]))
    channels = [2 * limb, 2 * limb + 1]
    paf[..., channels] = 0.7 * paf[..., channels] + ghost_paf[..., channels]
    wrist = J["left_wrist"]
    heat[..., wrist] = np.maximum(heat[..., wrist], 0.15 * ghost_heat[..., wrist])
    assert (find_peaks(heat, DecodeParams()).joint == wrist).sum() == 2  # the true wrist and the ghost
    people = decode(heat, paf, DecodeParams(), 256)
    assert len(people) == 1
    assert np.abs(people[0].keypoints[wrist, :2] - person[wrist, :2]).max() <= 2.0


def test_a_person_without_a_neck_stays_one_person():
    """No neck (a shoulder unlabelled): no limb joins the legs to the upper body; geometry does."""
    person = _person(150, 150)
    person[[J["neck"], J["left_shoulder"]], 2] = 0
    heat, paf = render(person[None], 256, 384)
    people = decode(heat, paf, DecodeParams(), 256)
    assert len(people) == 1 and people[0].num_parts == 16
    assert decode(heat, paf, DecodeParams(merge_ratio=0), 256)[0].num_parts < 16  # without joining: apart


def test_the_same_joint_of_two_people_10_pixels_apart_gives_two_peaks():
    a, b = _person(150, 150), _person(160, 150)
    heat, _ = render(np.stack([a, b]), 256, 384)
    peaks = find_peaks(heat, DecodeParams())
    noses = np.sort(peaks.xy[peaks.joint == J["nose"], 0])
    assert len(noses) == 2 and np.abs(noses - [150, 160]).max() <= 2.0  # each pulls the other a little


def test_assembly_order_comes_from_the_skeleton_graph():
    order, redundant = assembly_plan(BPNET_SKELETON)
    names = BPNET_SKELETON.limb_names()
    assert {names[k] for k in redundant} == {("right_eye", "right_ear"), ("left_eye", "left_ear")}
    assert all(n[0] == "neck" for n in (names[k] for k in order[:5]))
    reordered = Skeleton(BPNET_SKELETON.joints, tuple(reversed(BPNET_SKELETON.limbs)))  # other channel order
    assert {reordered.limb_names()[k] for k in assembly_plan(reordered)[1]} == {names[k] for k in redundant}


# -- the commands ------------------------------------------------------------------------------------

def _infer_spec(tmp_path: Path, train_spec: Path, **extra) -> Path:
    spec = {"train_spec": str(train_spec), "input_shape": [64, 64], "heatmap_threshold": 0.1, **extra}
    path = tmp_path / "infer.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_inference_writes_detections_and_drawings_and_reports_bad_images(tiny_model, synth_dir, tmp_path, caplog):
    model, train_spec = tiny_model
    images = tmp_path / "images"
    images.mkdir()
    for name in ("000000100001.jpg", "000000100002.jpg"):
        (images / name).write_bytes((synth_dir / "val2017" / name).read_bytes())
    (images / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    code = main(["inference", "-i", str(_infer_spec(tmp_path, train_spec)), "-m", str(model), "--input_type", "dir",
                 "--input", str(images), "-r", str(out), "--dump_visualizations", "-k", "tiny"])
    assert code == 1 and "broken.jpg: cannot decode image" in caplog.text
    doc = json.loads((out / "detection.json").read_text())
    assert doc["format"] == "bpnet-detections/1" and len(doc["keypoint_names"]) == 18
    assert [Path(i["image"]).name for i in doc["images"]] == ["000000100001.jpg", "000000100002.jpg"]
    assert doc["errors"][0]["image"].endswith("broken.jpg")
    assert sorted(p.name for p in (out / "images_annotated").iterdir()) == ["000000100001.jpg", "000000100002.jpg"]


def test_inference_json_input_and_empty_dir(tiny_model, synth_dir, tmp_path, caplog):
    model, train_spec = tiny_model
    spec = _infer_spec(tmp_path, train_spec, model_path=str(model))
    code = main(["inference", "-i", str(spec), "--input_type", "json", "-k", "tiny", "--input",
                 str(synth_dir / "annotations/person_keypoints_val2017.json"), "--image_root_path",
                 str(synth_dir / "val2017"), "-r", str(tmp_path / "out")])
    assert code == 0
    doc = json.loads((tmp_path / "out" / "detection.json").read_text())
    assert len(doc["images"]) == 8 and doc["images"][0]["image_id"] == 100000
    (tmp_path / "empty").mkdir()
    assert main(["inference", "-i", str(spec), "--input_type", "dir", "--input", str(tmp_path / "empty"),
                 "-r", str(tmp_path / "o2"), "-k", "tiny"]) == 1
    assert "no images" in caplog.text


def test_model_spec_mismatch_is_a_clear_error(tiny_model, tmp_path, caplog):
    model, train_spec = tiny_model
    spec = _infer_spec(tmp_path, train_spec, output_stage_to_use=5)
    assert main(["inference", "-i", str(spec), "-m", str(model), "--input_type", "image", "--input", "x.jpg",
                 "-r", str(tmp_path / "o"), "-k", "tiny"]) == 1
    assert "output_stage_to_use 5: the model has 2 stages" in caplog.text
    assert main(["inference", "-i", str(spec), "-m", str(model), "--input_type", "image", "--input", "x.jpg",
                 "-r", str(tmp_path / "o"), "-k", "wrong"]) == 1
    assert "wrong key" in caplog.text


def test_evaluate_writes_coco_metrics(tiny_model, synth_dir, tmp_path):
    model, train_spec = tiny_model
    out = tmp_path / "eval"
    code = main(["evaluate", "-i", str(_infer_spec(tmp_path, train_spec)), "-d", str(synth_dir / "coco_spec.json"),
                 "-m", str(model), "-r", str(out), "-k", "tiny", "--num_visualizations", "3"])
    assert code == 0
    assert len(list((out / "images_annotated").glob("*.jpg"))) == 3  # drawings of the first 3 images
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"AP", "AP50", "AP75", "AP_medium", "AP_large", "AR"} and metrics["images"] == 8
    assert 0.0 <= metrics["AP"] <= 1.0
    assert (out / "inference_spec.resolved.yaml").is_file()


@pytest.mark.parametrize("factor", [1, 2, 4, 8])
def test_any_upsampling_factor_decodes_the_same_people(factor):
    truth = np.stack([_person(100, 120, 20, 0), _person(250, 120, 0, -20)])
    heat, paf = render(truth, 256, 384)
    people = decode(heat, paf, DecodeParams(upsampling=(factor, factor)), 256)
    assert len(people) == 2 and all(p.num_parts == 18 for p in people)
    for person in people:
        target = truth[0] if person.keypoints[J["neck"], 0] < 175 else truth[1]
        assert np.abs(person.keypoints[:, :2] - target[:, :2]).max() <= 8.0 / factor + 1.5


def test_negative_visualization_count_is_a_usage_error(tiny_model, synth_dir, tmp_path, capsys):
    _, train_spec = tiny_model
    code = main(["evaluate", "-i", str(_infer_spec(tmp_path, train_spec)), "-d", str(synth_dir / "coco_spec.json"),
                 "-r", str(tmp_path / "eval"), "-k", "tiny", "--num_visualizations", "-1"])
    assert code == 2 and "--num_visualizations: -1" in capsys.readouterr().err


@pytest.mark.parametrize("shape, factors", [((16, 16), (8, 8)), ((5, 9), (4, 8)), ((2, 3), (8, 2))])
def test_paf_sampling_equals_a_full_bicubic_upsample(shape, factors):
    """The decoder upsamples PAFs along x only and applies the y taps per sample point (from maps
    padded by replicated rows); at every grid point that must equal OpenCV's full 2-D bicubic resize,
    borders included, or limb scores drift from what the maps say."""
    from bpnet.infer.decode import _Segments, _UpsampledPafs

    rng = np.random.default_rng(7)
    h, w = shape
    fy, fx = factors
    pafs = rng.standard_normal((h, w, 4)).astype(np.float32)
    full = cv2.resize(pafs, (w * fx, h * fy), interpolation=cv2.INTER_CUBIC)  # (h*fy, w*fx, 4)
    n = 50
    start = np.stack([rng.integers(0, w * fx, n), rng.integers(0, h * fy, n)]).astype(np.float32)
    end = np.stack([rng.integers(0, w * fx, n), rng.integers(0, h * fy, n)]).astype(np.float32)
    limb = rng.integers(0, 2, n)
    unit = np.stack([np.ones(n), np.zeros(n)]).astype(np.float32)  # x component only, then y only
    t = np.array([0.0, 0.5, 1.0], np.float32)
    col = np.rint(start[0] + t[:, None] * (end - start)[0]).astype(int)
    row = np.rint(start[1] + t[:, None] * (end - start)[1]).astype(int)
    # all rows, and only those each limb's segments reach (as the decoder upsamples them)
    reach = np.array([[row[:, limb == k].min(), row[:, limb == k].max()] for k in range(2)])
    every_row = np.tile([0, pafs.shape[0] * factors[0] - 1], (2, 1))
    for upsampled in (_UpsampledPafs.of(pafs, factors, every_row), _UpsampledPafs.of(pafs, factors, reach)):
        got_x = upsampled.dots(_Segments(start, end - start, unit, limb), t)
        got_y = upsampled.dots(_Segments(start, end - start, unit[::-1].copy(), limb), t)
        np.testing.assert_allclose(got_x, full[row, col, 2 * limb], atol=1e-4)
        np.testing.assert_allclose(got_y, full[row, col, 2 * limb + 1], atol=1e-4)


@pytest.mark.parametrize("rows, cols", [(5, 5), (1, 2), (2, 2), (3, 1)])
@pytest.mark.parametrize("factor", [1, 8])
def test_a_flat_plateau_gives_one_peak_at_its_centre(rows, cols, factor):
    """A plateau of the stride-8 map (a saturated output; 5x5 rings when upsampled) is one peak at
    its centroid, not one per upsampled pixel (before: 256 for 5x5)."""
    heat = np.zeros((16, 16, 19), np.float32)
    heat[5:5 + rows, 6:6 + cols, J["nose"]] = 0.8
    peaks = find_peaks(heat, DecodeParams(upsampling=(factor, factor)))
    assert len(peaks.score) == 1 and peaks.score[0] >= 0.8 - 1e-6  # up to 2x2: the upsampled hilltop
    centre = np.array([6 + (cols - 1) / 2, 5 + (rows - 1) / 2]) * 8 + 3.5  # cell centres, network-input pixels
    np.testing.assert_allclose(peaks.xy[0], centre, atol=1e-3)


@pytest.mark.parametrize("shape", [(46, 46), (1, 1), (1, 5)])
def test_constant_and_one_cell_maps_give_at_most_a_few_peaks(shape):
    """An all-constant map, and a random 1x1 map (8x8 once upsampled, flat), are one plateau per
    joint: a bounded, small output and no error (before: a peak per upsampled pixel, ~100k)."""
    rng = np.random.default_rng(0)
    h, w = shape
    constant = shape == (46, 46)
    heat = (np.full((h, w, 19), 0.5) if constant else rng.uniform(0, 1, (h, w, 19))).astype(np.float32)
    paf = (np.full((h, w, 38), 0.3) if constant else rng.uniform(-1, 1, (h, w, 38))).astype(np.float32)
    peaks = find_peaks(heat, DecodeParams())
    per_joint = np.bincount(peaks.joint, minlength=18)
    if constant:  # one plateau per joint: exactly one peak each, and at most one person
        assert (per_joint == 1).all()
        assert len(decode(heat, paf, DecodeParams(), 8 * h)) <= 1
    else:
        assert per_joint.max() <= max(1, (w + 1) // 2)  # one per plateau / coarse maximum
        assert len(decode(heat, paf, DecodeParams(), 8 * h)) <= max(1, (w + 1) // 2)


@pytest.mark.parametrize("factor", [1, 8])
def test_noise_keeps_at_most_the_cap_peaks_per_joint_the_best(factor):
    """A uniform-random map (what an untrained network outputs) has hundreds of peaks per joint, whose
    pairs cost seconds and a GB (before: 7,495 peaks, 3M pairs): the decoder keeps the best
    ``max_peaks_per_joint`` of each joint, and so at most that many people per joint."""
    rng = np.random.default_rng(0)
    heat = rng.uniform(0, 1, (46, 46, 19)).astype(np.float32)
    paf = rng.uniform(-1, 1, (46, 46, 38)).astype(np.float32)
    params = DecodeParams(upsampling=(factor, factor))
    cap = params.max_peaks_per_joint
    every = find_peaks(heat, DecodeParams(upsampling=(factor, factor), max_peaks_per_joint=46 * 46 * factor ** 2))
    peaks = find_peaks(heat, params)
    assert np.bincount(every.joint, minlength=18).min() > cap  # the cap binds on every joint
    assert (np.bincount(peaks.joint, minlength=18) == cap).all()
    for j in range(18):  # the best ones, best first
        np.testing.assert_array_equal(peaks.score[peaks.joint == j], every.score[every.joint == j][:cap])
    people = decode(heat, paf, params, 368)
    assert len(people) <= 18 * cap // params.min_parts  # each person holds >= min_parts distinct peaks
    for person in people:
        found = person.keypoints[:, 2] > 0
        assert np.isin(person.keypoints[found, 2], peaks.score).all()


def test_equal_peaks_beyond_the_cap_are_kept_in_raster_order():
    heat = np.zeros((32, 32, 19), np.float32)
    heat[4:28:4, 4:28:4, J["nose"]] = 0.8  # 6x6 identical bumps, away from the border
    peaks = find_peaks(heat, DecodeParams(max_peaks_per_joint=8))
    assert len(peaks.score) == 8 and np.ptp(peaks.score) < 1e-6
    rows_cols = np.array([(4, c) for c in range(4, 28, 4)] + [(8, 4), (8, 8)])
    np.testing.assert_allclose(peaks.xy[:, ::-1], rows_cols * 8 + 3.5, atol=1e-3)  # (y, x) cell centres
