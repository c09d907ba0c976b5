"""Issue 24: what the user owns is never lost, and a wrong result is never silent.

Each test is a case the adversarial pass found (each exited 0 or answered wrongly before): an
output that is an input, an existing file of another kind, a synth run into a dataset, two writers
of one results folder, a corrupt ``latest.json``, a calibration cache of another model, mirrored
keypoint names, pretrained weights of another architecture, an empty test split, ambiguous run
overrides, malformed Triton requests, a full disk. docs/reliability.md lists them.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from bpnet.cli import main
from bpnet.errors import DataError, ModelError, SpecError, UsageError
from bpnet.lock import BusyError, exclusive, lock_path

REPO = Path(__file__).resolve().parents[1]


def digest(path: Path) -> bytes:
    return path.read_bytes()


# ---- data loss: outputs that are inputs, outputs of another kind ----------------------------------

def test_an_output_that_is_an_input_is_refused_before_any_work(tiny_model, tmp_path, capsys):
    model, _ = tiny_model
    mine = tmp_path / "mine.tlt"
    mine.write_bytes(model.read_bytes())
    before = digest(mine)
    assert main(["prune", "-m", str(mine), "-o", str(mine), "-k", "tiny"]) == 2
    assert "is the input model; an output never replaces an input" in capsys.readouterr().err
    assert main(["export", "-m", str(mine), "-o", str(mine), "-k", "tiny", "-d", "64,64,3"]) == 2
    assert "is the input model" in capsys.readouterr().err
    assert digest(mine) == before
    assert list(tmp_path.iterdir()) == [mine]  # no report, no export.json


def test_an_existing_output_of_another_kind_needs_overwrite(tiny_model, tmp_path, capsys):
    model, _ = tiny_model
    notes = tmp_path / "notes.etlt"
    notes.write_text("the user's notes\n")
    assert main(["export", "-m", str(model), "-o", str(notes), "-k", "tiny", "-d", "64,64,3"]) == 2
    assert "exists and is not an exported model bpnet wrote" in capsys.readouterr().err
    assert notes.read_text() == "the user's notes\n"
    trained = tmp_path / "trained.tlt"  # a model is not what export writes, so it is not replaced either
    trained.write_bytes(model.read_bytes())
    assert main(["export", "-m", str(model), "-o", str(trained), "-k", "tiny", "-d", "64,64,3"]) == 2
    assert trained.read_bytes() == model.read_bytes()
    report = tmp_path / "pruned.tlt.json"
    report.write_text("[1, 2]")  # not a prune report: prune's report beside the output is refused too
    assert main(["prune", "-m", str(model), "-o", str(tmp_path / "pruned.tlt"), "-k", "tiny"]) == 2
    assert report.read_text() == "[1, 2]" and not (tmp_path / "pruned.tlt").exists()


def test_an_artifact_of_the_same_kind_is_replaced_and_overwrite_replaces_others(tiny_model, tmp_path):
    from bpnet.steps._common import is_model_file, replaceable_output

    model, _ = tiny_model
    again = tmp_path / "again.tlt"
    again.write_bytes(model.read_bytes())
    assert replaceable_output("output_file", again, {"model": model}, "a model", is_model_file("tiny")) == again
    with pytest.raises(UsageError, match="not a model bpnet wrote"):
        replaceable_output("output_file", again, {"model": model}, "a model", is_model_file("other key"))
    odd = tmp_path / "odd.tlt"
    odd.write_text("x")
    assert replaceable_output("output_file", odd, {"model": model}, "a model", is_model_file("tiny"),
                              overwrite=True) == odd
    with pytest.raises(UsageError, match="is the input model"):  # --overwrite never replaces an input
        replaceable_output("output_file", model, {"model": model}, "a model", is_model_file("tiny"), overwrite=True)


def test_synth_into_a_dataset_is_refused_and_a_synth_dataset_is_replaced(tmp_path, capsys):
    users = tmp_path / "coco"
    (users / "annotations").mkdir(parents=True)
    own = users / "annotations" / "person_keypoints_train2017.json"
    own.write_text('{"images": [], "annotations": []}')
    assert main(["synth", "-o", str(users), "--train_images", "1", "--val_images", "1"]) == 2
    assert "holds files that are not a synth dataset" in capsys.readouterr().err
    assert own.read_text() == '{"images": [], "annotations": []}' and len(list(users.rglob("*"))) == 2

    demo = tmp_path / "demo"
    assert main(["synth", "-o", str(demo), "--train_images", "3", "--val_images", "1"]) == 0
    assert main(["synth", "-o", str(demo), "--train_images", "1", "--val_images", "1"]) == 0  # ours: replaced
    assert len(list((demo / "train2017").iterdir())) == 1  # whole: no image of the first run left behind
    assert main(["synth", "-o", str(users), "--train_images", "1", "--val_images", "1", "--overwrite"]) == 0
    assert "synthetic" in own.read_text()


# ---- data loss: one writer per results folder ------------------------------------------------------

HOLD = textwrap.dedent("""
    import sys, time
    from bpnet.lock import exclusive
    with exclusive(sys.argv[1], "bpnet train"):
        print("held", flush=True)
        time.sleep(600)
""")


def hold_lock(target: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_of_a_results_folder_fails_at_once_naming_the_holder(synth_dir, converted, tmp_path,
                                                                             caplog):
    from tests.conftest import write_train_spec

    results = tmp_path / "run"
    results.mkdir()
    (results / "keep.txt").write_text("the first run's")
    spec = write_train_spec(tmp_path / "train.yaml", synth_dir, converted)
    holder = hold_lock(results)
    try:
        assert main(["train", "-e", str(spec), "-r", str(results), "-k", "tiny"]) == 1
        line = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"][-1]
        assert f"in use by bpnet train (pid {holder.pid} on host {os.uname().nodename}" in line
        assert "\n" not in line and "Traceback" not in line
        assert sorted(p.name for p in results.iterdir()) == ["keep.txt"]  # nothing written by the loser

        prefix = tmp_path / "records" / "train"
        other = hold_lock(prefix)
        try:
            assert main(["dataset_convert", "-d", str(synth_dir / "coco_spec.json"), "-o", str(prefix)]) == 1
            assert "in use by bpnet train" in caplog.records[-1].getMessage()
            assert not list(prefix.parent.glob("train-*"))
        finally:
            other.kill()
            other.wait()
    finally:
        holder.kill()
        holder.wait()


def test_two_writers_of_one_output_file_are_refused_too(tiny_model, tmp_path, caplog):
    """export, prune, calibrate and build_engine write a file and its companions (report, INT8
    model, export.json, build record): one writer at a time, so they never mix two runs."""
    model, _ = tiny_model
    out = tmp_path / "pruned.tlt"
    holder = hold_lock(out)
    try:
        assert main(["prune", "-m", str(model), "-o", str(out), "-k", "tiny"]) == 1
        assert f"in use by bpnet train (pid {holder.pid}" in caplog.records[-1].getMessage()
        assert not out.exists() and not (tmp_path / "pruned.tlt.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, caplog):
    target = tmp_path / "results"
    holder = hold_lock(target)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert lock_path(target).exists()  # left behind
    with exclusive(target, "bpnet train"):
        assert f"taking over the lock left by bpnet train (pid {holder.pid}" in caplog.text
        with pytest.raises(BusyError, match=f"pid {os.getpid()}"):  # and it holds: a second taker is refused
            with exclusive(target, "bpnet evaluate"):
                pass
    assert not lock_path(target).exists()


# ---- data loss: releases ----------------------------------------------------------------------------

def test_a_corrupt_latest_stops_publish_before_anything_is_uploaded(tmp_path):
    from bpnet.artifacts import ArtifactError
    from bpnet.release import LATEST, publish_release

    root = tmp_path / "releases"
    root.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(b"m")
    for bad in (b"{not json", b'{"release": "r0", "metrics": "high"}', b'{"release": "r0", "metrics": {"AP": "x"}}'):
        (root / LATEST).write_bytes(bad)
        with pytest.raises(ArtifactError, match="not a release pointer"):
            publish_release(src, str(root), "r1", {"AP": 0.5})
        assert sorted(p.name for p in root.iterdir()) == [LATEST]


def test_a_killed_local_publish_leaves_nothing_the_next_publish_keeps(tmp_path):
    from bpnet.release import publish_release
    from bpnet.storage import CLAIM_NAME

    root = tmp_path / "releases"
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(b"m")
    code = textwrap.dedent(f"""
        import os, signal
        from bpnet.storage import LocalStore
        def killed(*args):
            os.kill(os.getpid(), signal.SIGKILL)
        LocalStore.upload_file = killed
        from bpnet.release import publish_release
        publish_release({str(src)!r}, {str(root)!r}, "r0", {{"AP": 0.5}})
    """)
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == -signal.SIGKILL
    assert (root / "r0" / CLAIM_NAME).is_file() and not (root / "r0" / "MANIFEST.json").exists()
    users = root / "notes"
    users.mkdir()  # not claimed by a publish: never touched
    publish_release(src, str(root), "r1", {"AP": 0.5})
    names = {p.name for p in root.iterdir()}
    assert names == {"latest.json", "latest.json.lock", "notes", "r1"}  # r0, its claim and its lock are gone


def test_on_s3_a_release_id_is_taken_by_a_conditional_create_whoever_races(moto_server, monkeypatch, tmp_path):
    """The listing check before the claim is only a fast path: two publishers that both find the
    prefix empty still get one claim, because the claim is ``If-None-Match: *``."""
    from bpnet.storage import S3Settings, S3Store, StorageError

    settings = S3Settings(moto_server.endpoint, "testing", "testing", secure=False)
    S3Store("s3://race", settings).client.make_bucket("race")
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(b"m")
    monkeypatch.setattr(S3Store, "exists", lambda self: False)  # both saw an empty prefix
    first, second = S3Store("s3://race/r1", settings), S3Store("s3://race/r1", settings)
    first.create_tree(src)
    with pytest.raises(StorageError, match="exists already; a published release is never overwritten \\(claimed by "
                                           f"bpnet publish, pid {os.getpid()}"):
        second.create_tree(src)
    assert first.write_if(b"x", "other", None) and not second.write_if(b"y", "other", None)


def test_an_s3_server_ignoring_conditional_writes_is_refused_not_raced(moto_server, monkeypatch, tmp_path):
    from bpnet.storage import CLAIM_NAME, S3Settings, S3Store, StorageError

    settings = S3Settings(moto_server.endpoint, "testing", "testing", secure=False)
    store = S3Store("s3://plain/r1", settings)
    store.client.make_bucket("plain")
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(b"m")
    put = store.client._put_object  # noqa: SLF001 - the call write_if makes

    def unconditional(bucket, key, data, headers, *args, **kwargs):
        headers = {k: v for k, v in headers.items() if not k.startswith("If-")}
        return put(bucket, key, data, headers, *args, **kwargs)

    monkeypatch.setattr(store.client, "_put_object", unconditional)
    with pytest.raises(StorageError, match="ignores conditional writes"):
        store.create_tree(src)
    assert store.read_bytes(CLAIM_NAME) is None and store.read_bytes("model.bin") is None


# ---- silent wrong results ---------------------------------------------------------------------------

def _onnx(weight: float) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((1, 1, 1, 1), weight, np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])], [w])
    return helper.make_model(graph).SerializeToString()


def test_a_calibration_cache_of_another_model_is_refused_unless_asked_for(tmp_path, caplog):
    from bpnet.deploy.calibration import check_cache_fits, check_cache_model, write_cache_record, write_scales

    mine, other = _onnx(1.0), _onnx(2.0)
    cache = tmp_path / "cal.bin"
    write_scales({"x": 0.1, "y": 0.2}, cache)
    check_cache_fits({"x": 0.1, "y": 0.2}, other, str(cache))  # same architecture: the graph check passes ...
    with pytest.raises(ModelError, match="of an unknown model"):  # ... but no sidecar: refused
        check_cache_model(cache, mine)
    write_cache_record(cache, other)
    with pytest.raises(ModelError, match="a cache of another model; remove it .* or pass --foreign_cal_cache"):
        check_cache_model(cache, mine)
    check_cache_model(cache, mine, foreign=True)
    assert "used as asked" in caplog.text
    write_cache_record(cache, mine)
    check_cache_model(cache, _onnx(1.0))  # another export of the same weights is the same model


def test_keypoint_names_in_another_order_than_the_annotation_file_are_refused(synth_dir, tmp_path):
    from bpnet.settings import ConvertSettings
    from bpnet.specs import DatasetSpec, load_spec
    from bpnet.steps.dataset_convert import dataset_convert

    spec = json.loads((synth_dir / "coco_spec.json").read_text())
    names = spec["categories"][0]["keypoints"]
    names[5], names[6] = names[6], names[5]  # left and right shoulder swapped
    spec["categories"][0].pop("skeleton_edge_names", None)
    spec["root_directory_path"] = str(synth_dir)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(DataError, match='names its keypoints otherwise than the dataset spec \\(position 5: '
                                        '"left_shoulder" in the file, "right_shoulder" in the spec\\)'):
        dataset_convert(load_spec(path, DatasetSpec), tmp_path / "out" / "train", ConvertSettings(mode="test"))
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_pretrained_weights_of_another_architecture_are_refused_naming_the_layers(tiny_model, synth_dir, converted,
                                                                                  tmp_path):
    from bpnet.specs import TrainSpec, load_spec
    from bpnet.train import initial_model
    from tests.conftest import write_train_spec

    model, _ = tiny_model  # 2 stages
    spec = write_train_spec(tmp_path / "t.yaml", synth_dir, converted, **{"model.stages": 3,
                                                                         "pretrained_weights": str(model)})
    with pytest.raises(ModelError, match=r"another architecture: \d+ layer\(s\) of the spec's model are not in "
                                         r"it \(.*stage3_conv1"):
        initial_model(load_spec(spec, TrainSpec), "tiny")
    spec = write_train_spec(tmp_path / "t.yaml", synth_dir, converted, **{
        "model.stages": 3, "pretrained_weights": str(model), "partial_pretrained_weights": True})
    assert initial_model(load_spec(spec, TrainSpec), "tiny") is not None


def test_evaluate_on_a_split_without_images_is_refused(synth_dir, tmp_path):
    from bpnet.evaluate import ground_truth
    from bpnet.pose import BPNET_SKELETON
    from bpnet.specs import DatasetSpec, load_spec

    root = tmp_path / "data"
    (root / "annotations").mkdir(parents=True)
    doc = json.loads((synth_dir / "annotations" / "person_keypoints_val2017.json").read_text())
    (root / "annotations" / "person_keypoints_val2017.json").write_text(json.dumps({**doc, "images": [],
                                                                                      "annotations": []}))
    spec = {**json.loads((synth_dir / "coco_spec.json").read_text()), "root_directory_path": str(root)}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(DataError, match="the test split has no images"):
        ground_truth(load_spec(tmp_path / "spec.json", DatasetSpec), BPNET_SKELETON)


@pytest.mark.parametrize(("items", "message"), [
    (["engine_targets=,"], "',' — names no target"),
    (["engine_targets= , "], "names no target"),
    (["num_epoch=5", "num_epoch=7"], "num_epoch is set twice (num_epoch=5 first)"),
    (["num_epoch=5_0"], "'5_0' — expected a plain number"),
    (["base_learning_rate=1_0e-3"], "expected a plain number")])
def test_ambiguous_run_overrides_are_refused(items, message):
    from pipelines.arguments import parse_overrides

    with pytest.raises(SpecError) as caught:
        parse_overrides(items)
    assert message in caught.value.lines[0]


def test_a_dataset_naming_only_some_joints_is_a_clear_error():
    from bpnet.pose import BPNET_SKELETON, PoseConfigError, dataset_to_model_keypoints

    with pytest.raises(PoseConfigError, match=r"the dataset has no keypoint \['left_shoulder', 'right_shoulder'\] "
                                              r"for the pose config's joint 'neck' \(derived from"):
        dataset_to_model_keypoints(np.zeros((1, 1, 3)), ["nose"], BPNET_SKELETON)


# ---- the Triton decoder: one error response per bad request --------------------------------------

def _decoder(stage: str):
    from bpnet.deploy.triton_model import TritonPythonModel, decode_params, settings_from
    from bpnet.infer.decode import DecodeParams
    from bpnet.pose import BPNET_SKELETON
    from tests.test_serving import _stand_in_pb_utils

    model = TritonPythonModel()
    model.pb, model.stage, model.skeleton = _stand_in_pb_utils(), stage, BPNET_SKELETON
    model.settings = settings_from(DecodeParams(), (1 / 256,) * 3, (0.5,) * 3, (64, 64),
                                   {"input_name": "input_1", "heatmap_name": "heatmap_out", "paf_name": "paf_out"},
                                   max_people=4, skeleton=BPNET_SKELETON)
    model.params = decode_params(model.settings)
    return model


def _request(pb, **arrays) -> dict:
    return {name: pb.Tensor(name, np.asarray(a)) for name, a in arrays.items()}


def test_malformed_preprocess_requests_get_their_own_error_and_the_others_an_answer():
    model = _decoder("preprocess")
    pb = model.pb
    good = _request(pb, IMAGE=np.zeros((1, 30, 40, 3), np.uint8))
    bad = {"0x0 image": _request(pb, IMAGE=np.zeros((1, 0, 0, 3), np.uint8)),
           "grey": _request(pb, IMAGE=np.zeros((1, 30, 40), np.uint8)),
           "float": _request(pb, IMAGE=np.zeros((1, 30, 40, 3), np.float32)),
           "missing": {}}
    responses = model.execute([good, *bad.values(), good])
    assert responses[0].error is None and responses[0].outputs["PLAN"].tolist() == [[30, 40, 64, 64, 48, 64]]
    assert responses[-1].error is None
    for response in responses[1:-1]:
        assert response.error is not None and response.error.message.startswith("input IMAGE: ")


def test_malformed_decode_requests_are_refused_instead_of_people_outside_the_image():
    model = _decoder("decode")
    pb = model.pb
    heat, paf, plan = np.zeros((1, 8, 8, 19), np.float32), np.zeros((1, 8, 8, 38), np.float32), \
        np.array([[30, 40, 64, 64, 48, 64]], np.int32)
    inf = heat.copy()
    inf[0, 2, 2, 0] = np.inf
    cases = {"heatmap_out: holds NaN or infinite": dict(heatmap_out=inf, paf_out=paf, PLAN=plan),
             "PLAN: names a 128x128 network input": dict(heatmap_out=heat, paf_out=paf,
                                                         PLAN=[[30, 40, 128, 128, 96, 128]]),
             "heatmap_out: is 16x8": dict(heatmap_out=np.zeros((1, 16, 8, 19), np.float32),
                                          paf_out=np.zeros((1, 16, 8, 38), np.float32), PLAN=plan),
             "PLAN: is (3,)": dict(heatmap_out=heat, paf_out=paf, PLAN=[[1, 2, 3]]),
             "PLAN: missing": dict(heatmap_out=heat, paf_out=paf),
             "PLAN: batches differ": dict(heatmap_out=heat, paf_out=paf, PLAN=np.repeat(plan, 2, axis=0)),
             "paf_out: is (8, 8, 37) per image; expected (8, 8, 38)": dict(
                 heatmap_out=heat, paf_out=np.zeros((1, 8, 8, 37), np.float32), PLAN=plan)}
    good = _request(pb, heatmap_out=heat, paf_out=paf, PLAN=plan)
    responses = model.execute([good, *(_request(pb, **c) for c in cases.values())])
    assert responses[0].error is None and responses[0].outputs["PEOPLE"].tolist() == [[0]]
    for expected, response in zip(cases, responses[1:], strict=True):
        assert response.error is not None and f"input {expected}" in response.error.message, expected


# ---- crashes and unclear messages -------------------------------------------------------------------

def test_ctrl_c_is_one_line_with_what_to_do(monkeypatch, caplog, capsys, synth_dir, converted, tmp_path):
    from tests.conftest import write_train_spec

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("bpnet.train.train", interrupted)
    spec = write_train_spec(tmp_path / "t.yaml", synth_dir, converted)
    assert main(["train", "-e", str(spec), "-r", str(tmp_path / "run"), "-k", "tiny"]) == 130
    assert "bpnet train: interrupted; rerun the same command to resume from the last checkpoint" in caplog.text
    assert "Traceback" not in caplog.text + capsys.readouterr().err
    assert not lock_path(tmp_path / "run").exists()  # the lock went with it


def test_a_key_with_a_line_end_is_named_not_read_as_a_wrong_key(monkeypatch):
    from bpnet.steps._common import model_key

    monkeypatch.setenv("BPNET_MODEL_KEY", "secret\n")
    with pytest.raises(UsageError, match="ends with a space or a newline"):
        model_key(None)


def test_a_folder_as_convert_output_and_more_shards_than_images_are_refused(synth_dir, tmp_path):
    from bpnet.settings import ConvertSettings
    from bpnet.specs import DatasetSpec, load_spec
    from bpnet.steps.dataset_convert import dataset_convert

    spec = load_spec(synth_dir / "coco_spec.json", DatasetSpec)
    out = tmp_path / "records"
    out.mkdir()
    with pytest.raises(UsageError, match="is a folder; the output is a prefix"):
        dataset_convert(spec, f"{out}/", ConvertSettings(mode="test"))
    with pytest.raises(DataError, match="num_shards: 9 — more shards than the 8 images"):
        dataset_convert(spec, out / "val", ConvertSettings(mode="test", num_shards=9))
    assert not list(out.iterdir()) and not list(tmp_path.glob("records-*"))


def test_inference_json_never_opens_a_path_outside_the_image_root(tmp_path):
    from bpnet.infer.run import list_inputs

    listing = tmp_path / "in.json"
    for name in ("../secret.jpg", "/etc/passwd", "a/../../b.jpg"):
        listing.write_text(json.dumps({"images": [{"file_name": "ok.jpg"}, {"file_name": name}]}))
        with pytest.raises(DataError, match="lies outside the image root"):
            list_inputs("json", listing, tmp_path / "images")
    listing.write_text(json.dumps({"images": [{"file_name": "sub/ok.jpg"}]}))
    assert list_inputs("json", listing, tmp_path / "images")[0].path == tmp_path / "images" / "sub" / "ok.jpg"


def test_s3_without_credentials_is_one_clear_line():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from bpnet.storage import S3Settings, S3Store, StorageError

    class Forbidden(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_PUT = do_GET  # noqa: N815

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forbidden)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        store = S3Store("s3://bucket/x", S3Settings(f"127.0.0.1:{server.server_port}", secure=False, retries=1))
        with pytest.raises(StorageError, match="refused the request \\(HTTP 403.*are not set"):
            store.read_bytes("latest.json")
    finally:
        server.shutdown()


def _limited(limit: int):
    """A subprocess file-size limit: writes past it fail with EFBIG ("File too large"), as a full
    disk fails with ENOSPC (a small tmpfs cannot be mounted here). Python ignores SIGXFSZ."""
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_convert_on_a_full_disk_is_one_line_and_leaves_nothing(synth_dir, tmp_path):
    out = tmp_path / "records"
    proc = subprocess.run([sys.executable, "-m", "bpnet.cli", "dataset_convert", "-d",
                           str(synth_dir / "coco_spec.json"), "-o", str(out / "train")],
                          preexec_fn=_limited(20_000), capture_output=True, text=True,  # noqa: PLW1509
                          timeout=300, check=False)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "File too large" in errors[0] and "Traceback" not in proc.stderr
    assert not out.exists()  # no shard, no temporary, no manifest: not even the folder


def test_drawings_on_a_full_disk_leave_no_partial_folder(tmp_path, monkeypatch):
    import errno

    from bpnet.infer import run
    from bpnet.layout import ANNOTATED_DIR

    images = tmp_path / "images"
    images.mkdir()
    import cv2

    for k in range(3):
        cv2.imwrite(str(images / f"{k}.jpg"), np.zeros((16, 16, 3), np.uint8))
    written = []

    def draw(rgb, people, dest, skeleton):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device", str(dest))
        Path(dest).write_bytes(b"jpg")
        written.append(dest)

    monkeypatch.setattr(run, "write_drawing", draw)
    results = tmp_path / "results"
    (results / ANNOTATED_DIR).mkdir(parents=True)
    (results / ANNOTATED_DIR / "before.jpg").write_bytes(b"an earlier run's")
    from bpnet.pose import BPNET_SKELETON

    class NoPeople:  # a stand-in network that finds nobody
        skeleton = BPNET_SKELETON

        def __call__(self, rgb):
            return types.SimpleNamespace(people=[])

    predictor = NoPeople()
    with pytest.raises(OSError, match="No space left"):
        run.run_inference(predictor, run.list_inputs("dir", images), results, dump_visualizations=True)
    assert sorted(p.name for p in results.iterdir()) == [ANNOTATED_DIR]  # no staging folder left
    assert [p.name for p in (results / ANNOTATED_DIR).iterdir()] == ["before.jpg"]


@pytest.mark.slow
def test_train_on_a_full_disk_is_one_line_and_leaves_no_partial_checkpoint(synth_dir, converted, tmp_path):
    from tests.conftest import write_train_spec

    spec = write_train_spec(tmp_path / "t.yaml", synth_dir, converted, num_epoch=1)
    results = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "bpnet.cli", "train", "-e", str(spec), "-r", str(results), "-k",
                           "tiny"], preexec_fn=_limited(60_000),  # noqa: PLW1509
                          capture_output=True, text=True, timeout=900,
                          check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "File too large" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not list(results.rglob("*_temp*")) and not (results / "MANIFEST.json").exists()
