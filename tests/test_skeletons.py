"""Any skeleton end to end: real hand, animal and CrowdPose data convert and decode back; the
synthetic figures of any skeleton; models, exports and deployment configs carry the skeleton;
a mismatch between a model, records and a spec is refused by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bpnet.data.convert import verified_shards
from bpnet.data.synth import generate
from bpnet.deploy import deepstream, triton
from bpnet.errors import DataError, ModelError
from bpnet.evaluate import coco_metrics, ground_truth
from bpnet.infer.decode import DecodeParams, assembly_plan
from bpnet.model.exported import ExportInfo
from bpnet.pose import BPNET_SKELETON, PoseConfigError, load_pose_config
from bpnet.settings import ConvertSettings
from bpnet.specs import DatasetSpec, InferenceSpec, TrainSpec, load_spec
from bpnet.specs.loader import SpecError
from bpnet.steps.dataset_convert import dataset_convert

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "tests/data/keypoint_samples"
SKELETONS = REPO / "specs/skeletons"
REAL = {"crowdpose": ("test_crowdpose.json", "crowdpose_14joints.json", 14),
        "onehand10k": ("test_onehand10k.json", "hand_21joints.json", 21),
        "ap10k": ("test_ap10k.json", "quadruped_17joints.json", 17)}


@pytest.fixture
def samples(tmp_path) -> Path:
    """A copy of the samples beside a copy of specs/skeletons, as their dataset specs expect, so
    that converting writes masks into the copy."""
    root = tmp_path / "repo"
    shutil.copytree(SAMPLES, root / "tests/data/keypoint_samples")
    shutil.copytree(SKELETONS, root / "specs/skeletons")
    return root / "tests/data/keypoint_samples"


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_samples_convert_to_their_skeleton(samples, tmp_path, name):
    annotations, pose, joints = REAL[name]
    spec = load_spec(samples / name / "dataset_spec.json", DatasetSpec)
    out = tmp_path / "records" / "train"
    result = dataset_convert(spec, out, ConvertSettings(mode="train", generate_masks=True))
    assert result.summary.samples_written >= 2
    assert verified_shards([out.with_name("train-fold-000-of-001")], load_pose_config(SKELETONS / pose)) > 0
    with pytest.raises(DataError, match="converted for the skeleton .* the train spec's pose config is 'person'"):
        verified_shards([out.with_name("train-fold-000-of-001")], BPNET_SKELETON)
    assert spec.skeleton.num_joints == joints


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_samples_round_trip_at_ap_095(name):
    """Ground truth -> the project's labels for the dataset's skeleton -> decode -> COCO AP with the
    dataset's sigmas, at input height 368 (benchmarks/decode_real.py prints the figures)."""
    from benchmarks.decode_real import round_trip

    annotations, pose, _ = REAL[name]
    doc = json.loads((SAMPLES / name / annotations).read_text())
    assert round_trip(doc, 368, skeleton=load_pose_config(SKELETONS / pose))[0][0] >= 0.95


@pytest.fixture(scope="module")
def hand_demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hand")
    generate(root, seed=0, train_images=4, val_images=4, skeleton=SKELETONS / "hand_21joints.json")
    return root


def test_synth_draws_any_skeleton_with_its_pose_config_inline(hand_demo):
    spec = load_spec(hand_demo / "coco_spec.json", DatasetSpec)
    hand = load_pose_config(SKELETONS / "hand_21joints.json")
    assert spec.skeleton == hand and spec.keypoint_names == list(hand.joints)
    doc = json.loads((hand_demo / "annotations/person_keypoints_val2017.json").read_text())
    assert doc["annotations"] and all(len(a["keypoints"]) == 63 and a["num_keypoints"] == 21
                                      for a in doc["annotations"])
    # the area OKS scales by is the figure's silhouette, more than the thin strokes drawn
    assert all(a["area"] > 0.2 * a["bbox"][2] * a["bbox"][3] for a in doc["annotations"])


def test_evaluation_uses_the_skeletons_sigmas_and_names_missing_keypoints(hand_demo):
    spec = load_spec(hand_demo / "coco_spec.json", DatasetSpec)
    hand = spec.skeleton
    doc = ground_truth(spec, hand)
    perfect = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
               for a in doc["annotations"]]
    sigmas = hand.sigmas_for(spec.keypoint_names)
    assert sigmas[0] == 0.029 and coco_metrics(json.loads(json.dumps(doc)), perfect, 1, sigmas)[0]["AP"] > 0.99
    shifted = [{**d, "keypoints": [v + 4 if k % 3 == 0 else v for k, v in enumerate(d["keypoints"])]}
               for d in perfect]
    hand_ap = coco_metrics(json.loads(json.dumps(doc)), shifted, 1, sigmas)[0]["AP"]
    loose_ap = coco_metrics(json.loads(json.dumps(doc)), shifted, 1, sigmas * 4)[0]["AP"]
    assert hand_ap < loose_ap  # the sigmas reach pycocotools: tighter ones score the same error lower
    with pytest.raises(PoseConfigError, match="has no joint .*'wrist'"):
        ground_truth(spec, BPNET_SKELETON)


def test_a_dataset_spec_checks_its_categories_map_and_inline_pose_config(hand_demo):
    data = json.loads((hand_demo / "coco_spec.json").read_text())
    first = data["categories"][0]
    other = {"id": 2, "name": "other", "num_joints": 21, "keypoints": list(reversed(first["keypoints"]))}
    for change, message in (({"categories": [first, other]}, r"categories\[1\] .* other keypoints"),
                            ({"keypoint_map": {"palm": "wrist"}}, r"keypoint_map.*\['palm'\]"),
                            ({"pose_config": {**data["pose_config"], "assembly_start": ["elbow"]}},
                             "assembly_start: unknown joint 'elbow'")):
        path = hand_demo / "bad_spec.json"
        path.write_text(json.dumps({**data, **change}))
        with pytest.raises(SpecError, match=message):
            load_spec(path, DatasetSpec)


def test_assembly_starts_where_the_pose_config_says():
    hand = load_pose_config(SKELETONS / "hand_21joints.json")
    order, redundant = assembly_plan(hand)
    assert not redundant and all(hand.limb_names()[k][0] == "wrist" for k in order[:5])
    crowd = load_pose_config(SKELETONS / "crowdpose_14joints.json")
    names = crowd.limb_names()
    assert {names[k] for k in assembly_plan(crowd)[1]} == {("left_shoulder", "left_hip"),
                                                           ("right_shoulder", "right_hip"), ("left_hip", "right_hip")}


def test_model_files_and_exports_record_their_skeleton(tmp_path):
    from bpnet.infer.predict import KerasBackend, ModelMismatchError, Predictor
    from bpnet.model.architecture import Architecture
    from bpnet.model.bpnet import build_model
    from bpnet.model.io import open_model, save_model

    hand = load_pose_config(SKELETONS / "hand_21joints.json")
    arch = Architecture(stages=2, heat_channels=hand.heat_channels, paf_channels=hand.paf_channels)
    model = build_model(arch.with_filters({k: 8 for k in arch.filters}), seed=0)
    path = save_model(model, tmp_path / "hand.tlt", "k", hand)
    assert open_model(path, "k").skeleton == hand
    backend = KerasBackend.load(path, "k")
    assert backend.skeleton == hand
    person_spec = load_spec(REPO / "specs/demo/bpnet_train_demo.yaml", TrainSpec)
    with pytest.raises(ModelMismatchError, match="records the skeleton 'hand' \\(21 joints\\), the train spec's pose "
                                                 "config .*bpnet_18joints.json is 'person' \\(18 joints\\)"):
        Predictor(backend, InferenceSpec(input_shape=(64, 64)), person_spec)
    with pytest.raises(ModelError, match="heads have .*22, 40.* the skeleton 'person' needs 19 / 38"):
        save_model(model, tmp_path / "person.tlt", "k", BPNET_SKELETON)
    info = ExportInfo(64, 64, 2, 2, False, skeleton=hand)
    assert ExportInfo.from_props(info.props(), "x") == info
    old = {k: v for k, v in info.props().items() if k != "bpnet.skeleton"}  # exported before skeletons
    assert ExportInfo.from_props(old, "x").skeleton == BPNET_SKELETON


def test_deployment_configs_follow_the_skeleton():
    hand = load_pose_config(SKELETONS / "hand_21joints.json")
    config = deepstream.postprocess_config(DecodeParams(), hand, 1, feat_upsampling=4).splitlines()
    assert "numJoints=21" in config and sum(line.startswith("jointEdges=") for line in config) == 20
    keypoints = triton.people_outputs(10, hand)[0]
    assert keypoints.dims == (10, 21, 3)
    from bpnet.deploy.triton_model import settings_from

    settings = settings_from(DecodeParams(), (256.0,) * 3, (0.5,) * 3, (64, 64), {}, 10, hand)
    assert load_pose_config_from(settings["skeleton"]) == hand


def load_pose_config_from(config: dict):
    from bpnet.pose import parse_pose_config

    return parse_pose_config(json.loads(json.dumps(config)), "settings")


def test_records_record_their_skeleton_and_refuse_another(synth_dir, tmp_path):
    from bpnet.artifacts import read_manifest

    spec = load_spec(synth_dir / "coco_spec.json", DatasetSpec)
    out = tmp_path / "train"
    dataset_convert(spec, out, ConvertSettings(mode="test"))
    manifest = read_manifest(out.with_name("train-manifest.json"))
    assert manifest["metadata"]["skeleton"]["num_joints"] == 18
    assert verified_shards([out.with_name("train-fold-000-of-001")], BPNET_SKELETON) > 0
    hand = load_pose_config(SKELETONS / "hand_21joints.json")
    with pytest.raises(DataError, match="'hand' \\(21 joints"):
        verified_shards([out.with_name("train-fold-000-of-001")], hand)
