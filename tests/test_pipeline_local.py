"""The run spec, the step adapters, and the whole DAG run locally through kfp.local."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bpnet import folders
from bpnet.layout import TRAIN_SPEC_FILE
from bpnet.specs import SpecError
from bpnet.storage import CLAIM_NAME, open_store
from components import runtime
from pipelines.__main__ import main
from pipelines.arguments import load_run_spec, pipeline_arguments
from pipelines.cron import to_kfp_cron
from tests.conftest import REPO, local_run_spec


def test_repository_run_specs_load():
    local = load_run_spec(REPO / "specs/pipeline/local.yaml")
    assert local.pipeline_root == str(REPO / "runs/pipeline") and local.dataset.uri == str(REPO / "data/demo")
    assert local.specs.retrain == str(REPO / "specs/demo/bpnet_retrain_demo.yaml")
    cluster = load_run_spec(REPO / "specs/pipeline/cluster.yaml")
    assert cluster.schedule.cron == "0 0 2 * * 0" and cluster.pipeline_root is None
    assert cluster.prune.pruning_threshold == 0.05 and cluster.prune.equalization_criterion == "union"
    assert cluster.path_map == [f"/workspace/examples/bpnet/model_pose_config={REPO / 'specs'}"]


@pytest.mark.parametrize(("change", "expected"), [
    ({"steps": {"train": {"gpus": -1}}}, "steps.train.gpus: -1 — expected greater than or equal to 0"),
    ({"schedule": {"cron": "0 2 * *"}}, "schedule.cron: \"0 2 * *\" — 4 fields; expected 5"),
    ({"schedule": {"cron": "0 2 * * MON-XYZ"}}, "schedule.cron: \"0 2 * * MON-XYZ\" — day of week: 'XYZ'"),
    ({"kfp": {"experment": "x"}}, "kfp.experment: \"x\" — unknown key (did you mean 'experiment'?)"),
    ({"gpu": {"pool": {"tolerations": [{"key": "k", "effect": "Sometimes"}]}}},
     "gpu.pool.tolerations.0.effect: \"Sometimes\" — expected 'NoSchedule', 'PreferNoSchedule' or 'NoExecute'"),
    ({"prune": {"pruning_threshold": 1.5}}, "prune.pruning_threshold: 1.5 — expected less than or equal to 1"),
    ({"engines": {"enabled": True}}, "images.jetson: null — engines.targets has Jetson targets: set images.jetson"),
    ({"prune": {"equalization_criterion": "median"}}, "prune.equalization_criterion: \"median\" — expected 'union'"),
    ({"serving": {"memory": "lots"}}, "serving.memory: \"lots\" — expected a positive Kubernetes quantity"),
    ({"release": {"root": "r", "max_int8_ap_drop": 2}},
     "release.max_int8_ap_drop: 2 — expected less than or equal to 1"),
    ({"serving": {"name": "Bad_Name"}}, "serving.name: \"Bad_Name\" — String should match pattern"),
    ({"dataset": {"uri": "s3://data/coco", "num_shards": 3}, "steps": {"train": {"workers": 2}}},
     "dataset.num_shards: 3 — steps.train.workers is 2: each worker reads whole record shards of its own, so "
     "num_shards must be a multiple of 2"),
])
def test_bad_run_spec_names_field_value_and_expectation(tmp_path, synth_dir, capsys, change, expected):
    spec = local_run_spec(tmp_path, synth_dir, **change)
    assert main(["compile", "--spec", str(spec), "--build_dir", str(tmp_path / "build")]) == 2
    err = capsys.readouterr().err
    assert f"spec error: {spec}: {expected}" in err or (expected in err and f"spec error: {spec}: -: " in err)
    assert not (tmp_path / "build").exists()


@pytest.mark.parametrize(("cron", "six"), [("0 2 * * *", "0 0 2 * * *"), ("*/5 * * * * *", "*/5 * * * * *"),
                                          ("0 0 3 ? * SUN", "0 0 3 ? * SUN"), ("@daily", "@daily"),
                                          ("15 4 1,15 JAN-JUN *", "0 15 4 1,15 JAN-JUN *")])
def test_cron_five_fields_become_six(cron, six):
    assert to_kfp_cron(cron) == six


@pytest.mark.parametrize("cron", ["", "* * * * * * *", "60 * * * *", "0 24 * * *", "0 0 0 * *", "0 0 * 13 *",
                                  "0 0 * * 7", "? 0 * * *", "*/0 * * * *", "5-2 * * * *", "@sometimes"])
def test_invalid_cron_is_rejected(cron):
    with pytest.raises(ValueError):
        to_kfp_cron(cron)


def test_a_bad_step_spec_stops_before_anything_runs(tmp_path, synth_dir):
    spec = load_run_spec(local_run_spec(tmp_path, synth_dir))
    Path(spec.specs.train).write_text(Path(spec.specs.train).read_text() + "num_epochs: 3\n")
    with pytest.raises(SpecError, match="num_epochs: 3 — unknown key \\(did you mean 'num_epoch'\\?\\)"):
        pipeline_arguments(spec)


def test_missing_pose_config_is_a_spec_error(tmp_path, synth_dir):
    spec = load_run_spec(local_run_spec(tmp_path, synth_dir))
    train = yaml.safe_load(Path(spec.specs.train).read_text())
    train["dataloader"]["pose_config"]["pose_config_path"] = "/nowhere/bpnet_18joints.json"
    Path(spec.specs.train).write_text(yaml.safe_dump(train))
    with pytest.raises(SpecError, match="dataloader.pose_config.pose_config_path: /nowhere/bpnet_18joints.json"):
        pipeline_arguments(spec)


def test_data_version_follows_the_data(tmp_path, synth_dir):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    first = runtime.data_version(str(data), "")
    assert runtime.data_version(str(data), "") == first  # same data, same cache key
    (data / "val2017" / "extra.jpg").write_bytes(b"new image")
    assert runtime.data_version(str(data), "") != first
    assert runtime.data_version(str(data), "2026-11") == "2026-11"  # a pinned version wins
    spec = load_run_spec(local_run_spec(tmp_path, synth_dir, dataset={"uri": str(data), "version": "2026-11"}))
    assert pipeline_arguments(spec)["data_version"] == "2026-11"


def test_convert_adapter_reads_a_raw_dataset_from_minio(moto_server, synth_dir, tmp_path, monkeypatch):
    """The dataset URI path of the pipeline: a plain COCO folder in a bucket (no manifest of ours)."""
    from minio import Minio

    monkeypatch.setenv("BPNET_S3_ENDPOINT", f"http://{moto_server.endpoint}")
    monkeypatch.setenv("BPNET_S3_ACCESS_KEY", "testing")
    monkeypatch.setenv("BPNET_S3_SECRET_KEY", "testing")
    client = Minio(moto_server.endpoint, access_key="testing", secret_key="testing", secure=False)
    client.make_bucket("datasets")
    for path in sorted(synth_dir.rglob("*")):
        if path.is_file() and "mask" not in path.parent.name:
            client.fput_object("datasets", f"demo/{path.relative_to(synth_dir).as_posix()}", str(path))

    train_out, val_out = tmp_path / "train_data", tmp_path / "val_data"
    spec_text = (synth_dir / "coco_spec.json").read_text()
    summary = runtime.dataset_convert("s3://datasets/demo", spec_text, train_out, val_out, generate_masks=True,
                                      num_shards=2)
    assert summary["train_images"] > 0 and summary["val_images"] == 8
    train = folders.record_summary(train_out, "train")  # what the train pod reads from the artifact
    assert train["shards"] == ["train-fold-000-of-002", "train-fold-001-of-002"]
    assert (summary["train_samples"], summary["train_images"]) == (train["samples_written"], train["images_written"])
    for out in (train_out, val_out):
        assert json.loads((out / "dataset_spec.json").read_text())["root_directory_path"] == "raw"
    # each artifact holds its own split only: evaluation pods download the val split alone
    assert sorted(p.name for p in (train_out / "raw").iterdir()) == ["annotations", "train2017", "train_mask2017"]
    assert sorted(p.name for p in (val_out / "raw").iterdir()) == ["annotations", "val2017", "val_mask2017"]
    assert any((train_out / "raw" / "train_mask2017").iterdir())  # masks land in the artifact's copy
    assert not list((val_out / "records").glob("train-*"))

    model_dir = tmp_path / "model"
    bound = folders.bind_train_spec({}, "{}", train_out, model_dir, pretrained=tmp_path / "pruned.tlt")
    config = bound["dataloader"]["dataset_config"]
    assert config["train_records_path"] == ["train-fold-000-of-002", "train-fold-001-of-002"]
    assert config["root_data_path"] == str(train_out / "raw") and config["dataset_specs"] == {
        "coco": str(train_out / "dataset_spec.json")}
    assert bound["dataloader"]["pose_config"]["pose_config_path"] == str(model_dir / "pose_config.json")
    assert (bound["pretrained_weights"], bound["load_graph"]) == (str(tmp_path / "pruned.tlt"), True)
    # with the val artifact, the learning curve scores its split (the train artifact holds no val images)
    bound = folders.bind_train_spec({}, "{}", train_out, model_dir, val_dir=val_out)
    assert bound["dataloader"]["dataset_config"]["dataset_specs"] == {"coco": str(val_out / "dataset_spec.json")}
    assert bound["dataloader"]["dataset_config"]["root_data_path"] == str(train_out / "raw")


def test_a_failing_step_says_why_in_the_pod_log(synth_dir, tmp_path, caplog):
    """A data problem is logged as the user's message (no traceback: it is not a bug) and re-raised
    for KFP; an unexpected exception is logged with its traceback."""
    import logging
    import shutil

    from bpnet.errors import DataError

    data = tmp_path / "raw"
    shutil.copytree(synth_dir, data, ignore=shutil.ignore_patterns("*mask*"))
    image = sorted((data / "val2017").glob("*.jpg"))[0]
    image.write_bytes(image.read_bytes()[:200])  # truncated
    spec_text = (synth_dir / "coco_spec.json").read_text()
    with caplog.at_level(logging.ERROR, logger="bpnet.components"), pytest.raises(DataError):
        runtime.dataset_convert(str(data), spec_text, tmp_path / "train_data", tmp_path / "val_data", True, 1)
    failure = next(r for r in caplog.records if r.name == "bpnet.components")
    assert failure.getMessage().startswith("dataset_convert failed: 1 problem(s) in the input data")
    assert image.name in failure.getMessage() and failure.exc_info is None

    caplog.clear()

    @runtime.logs_failure
    def broken() -> None:
        raise KeyError("x")

    with caplog.at_level(logging.ERROR, logger="bpnet.components"), pytest.raises(KeyError):
        broken()
    (bug,) = [r for r in caplog.records if r.name == "bpnet.components"]
    assert "a bug, not a data or settings problem" in bug.getMessage() and bug.exc_info[0] is KeyError

    caplog.clear()

    @runtime.logs_failure
    def unreadable() -> None:
        open(tmp_path / "missing.bin", "rb")

    with caplog.at_level(logging.ERROR, logger="bpnet.components"), pytest.raises(FileNotFoundError):
        unreadable()
    (io,) = [r for r in caplog.records if r.name == "bpnet.components"]
    assert "an I/O error" in io.getMessage() and io.exc_info[0] is FileNotFoundError


def test_make_run_without_a_model_key_exits_2_naming_it(tmp_path, synth_dir, monkeypatch, caplog):
    monkeypatch.setenv("BPNET_MODEL_KEY", "")  # make run's ?= keeps a variable set to empty
    assert main(["local", "--spec", str(local_run_spec(tmp_path, synth_dir))]) == 2
    assert "$BPNET_MODEL_KEY: not set (or empty)" in caplog.text
    assert not (tmp_path / "root").exists()  # stopped before the run started


def test_a_failed_local_run_is_one_line_and_a_driver_bug_a_traceback(tmp_path, synth_dir, monkeypatch, caplog):
    """kfp.local's "finished with status FAILURE" follows the failed step's own log: one line, exit 1;
    another exception in the driver is a bug, logged with its traceback."""
    import logging
    from types import SimpleNamespace

    import pipelines.local_run

    class Pipeline:  # what build_pipeline returns, reduced to what run_local touches
        pipeline_spec = SimpleNamespace(pipeline_info=SimpleNamespace(name="test"))

        def __init__(self, error: Exception):
            self.error = error

        def __call__(self):
            raise self.error

    monkeypatch.setenv("BPNET_MODEL_KEY", "k")
    spec = str(local_run_spec(tmp_path, synth_dir))
    for error, bug in ((RuntimeError("Pipeline test finished with status FAILURE. Inner task failed: train."), False),
                       (KeyError("planted"), True)):
        monkeypatch.setattr(pipelines.local_run, "build_pipeline", lambda spec, arguments, e=error: Pipeline(e))
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="pipelines"):
            assert main(["local", "--spec", spec]) == 1
        (record,) = [r for r in caplog.records if r.name == "pipelines"]
        assert ("a bug" in record.getMessage()) is bug and (record.exc_info is not None) is bug
        assert bug or record.getMessage().endswith("Inner task failed: train. Its log above says why.")


@pytest.mark.slow  # the whole DAG (two trainings, export, calibration, release) through kfp.local: make test-all
def test_whole_dag_runs_locally_through_kfp_local(tmp_path, synth_dir, monkeypatch):
    from bpnet.overrides import RunOverrides
    from pipelines.local_run import format_summary, run_local

    monkeypatch.setenv("BPNET_MODEL_KEY", "local-dag-test")
    summary = run_local(local_run_spec(tmp_path, synth_dir), RunOverrides(batch_size=2))  # the specs say 4

    assert [s["step"] for s in summary["steps"]] == [
        "dataset_convert", "calibration_data", "train", "evaluate unpruned", "prune", "evaluate pruned", "retrain",
        "evaluate retrained", "evaluate Keras (export mode)", "export", "evaluate ONNX fp32", "calibrate",
        "evaluate ONNX INT8", "inference"]
    assert all(s["seconds"] > 0 for s in summary["steps"])
    metrics = summary["metrics"]
    assert set(metrics) == {"AP", "AP50", "AP75", "AP_medium", "AP_large", "AR"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    steps = {s["step"]: Path(s["output"]) for s in summary["steps"]}
    assert (steps["dataset_convert"] / "records" / "train-fold-000-of-001").is_file()
    models = {m["model"]: m for m in summary["models"]}
    assert models["pruned"]["parameters"] < models["unpruned"]["parameters"]  # threshold 0.9 removes filters
    assert models["retrained"]["parameters"] == models["pruned"]["parameters"]  # the graph was loaded
    assert models["pruned"]["gflops_at_64x64"] < models["unpruned"]["gflops_at_64x64"]
    for name in ("train", "retrain"):
        assert (steps[name] / "bpnet_model.tlt").is_file() and (steps[name] / "pose_config.json").is_file()
        resolved = yaml.safe_load((steps[name] / TRAIN_SPEC_FILE).read_text())  # the step's resolved spec
        assert resolved["dataloader"]["batch_size"] == 2, name  # records the run parameter
    assert (steps["prune"] / "bpnet_model.tlt.json").is_file()
    assert (steps["export"] / "bpnet_model.etlt").is_file() and (steps["calibrate"] / "calibration.bin").is_file()
    assert (steps["calibrate"] / "calibration.tensorfile.npy").is_file()
    assert (steps["export"] / "bpnet_model.sdk.etlt").is_file()  # what DeepStream engines are built from
    assert (steps["calibrate"] / "calibration.sdk.bin").is_file()  # its cache: the standard one fitted to it
    assert 0.0 <= models["ONNX INT8"]["AP"] <= 1.0 and models["ONNX fp32"]["parameters"] == models["retrained"][
        "parameters"]
    assert json.loads((steps["evaluate retrained"] / "metrics.json").read_text())["AP"] == metrics["AP"]
    assert models["retrained"]["AP"] == metrics["AP"]
    assert len(json.loads((steps["inference"] / "detection.json").read_text())["images"]) == 8
    for report in summary["reports"].values():
        assert Path(report).read_text().count("data:image/jpeg;base64,") == 2  # report_images
    assert json.loads((Path(summary["run_dir"]) / "summary.json").read_text())["metrics"] == metrics
    text = format_summary(summary)
    assert f"AP {metrics['AP']:.3f}" in text and str(steps["train"]) in text and "retrained" in text
    latest = json.loads((tmp_path / "releases" / "latest.json").read_text())  # min_ap 0: promoted
    assert summary["promotion"] == "promote" and summary["release"] == latest["release"]
    release = Path(latest["uri"])
    for relative in ("model/bpnet_model.tlt", "model/unpruned/bpnet_model.tlt", "onnx/bpnet_model.etlt",
                     "metrics.json", "MODEL_CARD.md", "MANIFEST.json", "triton/bpnet_onnx/config.pbtxt",
                     "triton/bpnet_onnx/1/model.onnx", "triton/bpnet_pose_onnx/config.pbtxt",
                     "triton/bpnet_decode/1/model.py", "deepstream/onnx/pgie_config.txt", "deepstream/onnx/model.onnx",
                     "onnx/bpnet_model.sdk.etlt",
                     "deepstream/README.md", "kserve/inferenceservice.yaml", "check_runtime.py"):
        assert (release / relative).is_file(), relative
    # the release is exactly its manifest (every file listed, sizes and sha256 verified)
    fetched = open_store(str(release)).fetch(tmp_path / "fetched")
    assert {f["path"] for f in fetched["files"]} == {p.relative_to(release).as_posix() for p in release.rglob("*")
                                                      if p.is_file() and p.name not in ("MANIFEST.json", CLAIM_NAME)}
    # the INT8 gate tripped (limit -1): no INT8 file released, and the card and summary say why with both figures
    fp32, int8 = models["ONNX fp32"]["AP"], models["ONNX INT8"]["AP"]
    assert not (release / "onnx/bpnet_model.int8.etlt").exists() and not (release / "calibration").exists()
    why = f"INT8 not released: INT8 AP {int8:.4f} < fp32 AP {fp32:.4f} - -1.0000"
    assert summary["int8"].startswith(f"hold: {why}") and why in (release / "MODEL_CARD.md").read_text()
    assert "| ONNX INT8 |" in (release / "MODEL_CARD.md").read_text() and f"INT8 gate: hold: {why}" in text
    same = summary["same_mode"]  # Keras, ONNX fp32 and INT8 at one aspect-ratio mode, in one table
    assert same["mode"] == "pad_image_input 64x64" and same["ONNX fp32"] == fp32 and same["ONNX INT8"] == int8
    assert abs(same["Keras"] - fp32) < 0.05  # the export itself loses (almost) nothing at the same mode
    assert "same aspect-ratio mode (pad_image_input 64x64):" in text


def test_summary_columns_stay_aligned_after_the_longest_label():
    """Every step's seconds and every model's figures end in the same column, whatever the label
    length ("evaluate Keras (export mode)" is longer than the other step names)."""
    from pipelines.local_run import format_summary
    from pipelines.outputs import EVALUATED, summary_rows

    steps = [{"step": row.label, "seconds": 12.5 * (k + 1), "output": f"/runs/{row.label}"} for k, row in
             enumerate(summary_rows())]
    models = [{"model": e.label, "parameters": 412_554, "gflops_at_128x128": 0.4292, "AP": 0.078, "AP50": 0.354}
              for e in EVALUATED]
    text = format_summary({"metrics": {"AP": 0.1}, "steps": steps, "seconds": 859.2, "models": models,
                           "reports": {}})
    lines = text.splitlines()
    rows = dict(zip([s["step"] for s in steps] + ["total"], lines[2:len(steps) + 3], strict=True))
    ends = {row.index(f"{seconds:.1f}") + len(f"{seconds:.1f}") for seconds, row in
            zip([s["seconds"] for s in steps] + [859.2], rows.values(), strict=True)}
    assert all(row.startswith(name + " ") for name, row in rows.items()) and len(ends) == 1  # one seconds column
    header = next(k for k, line in enumerate(lines) if line.startswith("model "))
    model_rows = lines[header + 1:header + 1 + len(models)]
    assert all(row.startswith(m["model"] + " ") for m, row in zip(models, model_rows, strict=True))
    assert len({len(row) for row in model_rows + [lines[header]]}) == 1  # right-aligned figures under their header
    assert all(row.endswith("0.078   0.354") for row in model_rows)
    artifacts = lines[lines.index("artifacts:") + 1:]
    assert [row.split("/runs/")[0].strip() for row in artifacts] == [s["step"] for s in steps]
    assert len({row.index("/runs/") for row in artifacts}) == 1  # paths in one column, after the longest label


def _run_outputs(tmp_path: Path, export_shape: str, promotion: str, gpu_targets: list[str],
                 evaluated: tuple = ()) -> dict:
    """A run's outputs as kfp.local hands them over (artifacts with uri and metadata, parameters),
    with made-up figures; the export reports the input size it exported at. ``evaluated``: the
    evaluations (pipelines.outputs.Evaluated), EVALUATED by default."""
    from types import SimpleNamespace

    from pipelines.outputs import EVALUATED, STEP_OUTPUTS

    def artifact(name: str, **metadata) -> SimpleNamespace:
        return SimpleNamespace(uri=str(tmp_path / "run" / name / "out"), metadata=metadata)

    outputs = {o.name: artifact(o.name) for o in STEP_OUTPUTS}
    for e in evaluated or EVALUATED:
        outputs.update({e.results: artifact(e.results), e.metrics: artifact(e.metrics, AP=0.5, AP50=0.7)})
    outputs.update(evaluation_report=artifact("evaluation_report"),
                   inference_report=artifact("inference_report"),
                   exported_model=artifact("exported_model", input_shape=export_shape), promotion=promotion,
                   int8_verdict="hold: INT8 AP below fp32 AP", jetson_engine_targets=[],
                   gpu_engine_targets=[{"name": name, "precision": "fp16"} for name in gpu_targets])
    return outputs


def test_the_summary_reports_what_the_run_used_not_what_the_spec_says(tmp_path):
    """``--set input_height=96`` exports (and compares Keras, ONNX fp32 and INT8) at 96x64 whatever
    the spec's export size; the engines are the targets the INT8 gate kept (engine_targets chose
    them), built for a promoted model only."""
    from pipelines.local_run import run_summary

    releases = str(tmp_path / "releases")
    summary = run_summary(_run_outputs(tmp_path, "96x64", "promote", ["gpu-fp16"]), 1.0, True, releases)
    assert summary["same_mode"]["mode"] == "pad_image_input 96x64" and summary["engines"] == "built: gpu-fp16"
    hold = "hold: AP 0.1000 is below the minimum 0.5000"
    assert run_summary(_run_outputs(tmp_path, "96x64", hold, ["gpu-fp16"]), 1.0, True, releases)["engines"] == (
        f"not built: the model was not promoted ({hold})")
    assert run_summary(_run_outputs(tmp_path, "96x64", "promote", []), 1.0, True, releases)["engines"].startswith(
        "none built: no engine target left")
    assert run_summary(_run_outputs(tmp_path, "96x64", "promote", ["gpu-fp16"]), 1.0, False, releases)[
        "engines"].startswith("not built: engines.enabled is false")


def test_summary_json_the_finished_marker_is_written_atomically(tmp_path, monkeypatch):
    """RunGuard takes a run folder with summary.json as finished: a write cut short leaves none
    (a plain write would leave a partial file marking the run finished), a whole one marks it."""
    import os

    from pipelines.local_run import SUMMARY_FILE, RunGuard, write_summary

    run = tmp_path / "root" / "bpnet-1"
    run.mkdir(parents=True)
    guard = RunGuard(tmp_path / "root", "bpnet")

    def cut_short(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(os, "replace", cut_short)
    with pytest.raises(OSError, match="No space left"):
        write_summary(run, {"seconds": 1.0})
    monkeypatch.undo()
    assert list(run.iterdir()) == [] and guard.new_unfinished([]) == [run]
    write_summary(run, {"seconds": 1.0})
    assert json.loads((run / SUMMARY_FILE).read_text()) == {"seconds": 1.0} and guard.new_unfinished([]) == []


def test_a_seventh_evaluated_model_is_one_declaration(tmp_path, synth_dir, monkeypatch):
    """One more ``Evaluated`` entry, nothing else: its evaluate task reads the declared model at the
    declared input mode and feeds the publish step; the run summary has its row after the step
    that made its model and its AP; the release records its figures (metrics.json, model card)."""
    from types import SimpleNamespace

    import yaml
    from kfp import compiler

    from bpnet.release import RETRAINED, model_card
    from components import runtime
    from components.publish import publish_component
    from pipelines.arguments import load_run_spec, pipeline_arguments
    from pipelines.dag import build_pipeline
    from pipelines.local_run import format_summary, run_summary
    from pipelines.outputs import EVALUATED, Evaluated

    seventh = Evaluated("pruned (export mode)", "pruned_export", "pruned_model", "export")
    evaluated = (*EVALUATED, seventh)
    spec = load_run_spec(local_run_spec(tmp_path, synth_dir))
    compiler.Compiler().compile(build_pipeline(spec, pipeline_arguments(spec), evaluated), str(tmp_path / "p.yaml"))
    pipeline = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    tasks = pipeline["root"]["dag"]["tasks"]
    [task] = [t for t in tasks.values() if t["taskInfo"]["name"] == "evaluate pruned (export mode)"]
    assert task["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == "prune"
    assert task["inputs"]["parameters"]["export_settings"] == {"componentInputParameter": "export_settings"}
    promoted = pipeline["components"][tasks["condition-1"]["componentRef"]["name"]]["dag"]["tasks"]
    assert promoted["publish"]["inputs"]["artifacts"]["metrics_pruned_export"]["componentInputArtifact"]
    assert {"evaluation_pruned_export", "metrics_pruned_export"} <= set(
        pipeline["root"]["outputDefinitions"]["artifacts"])

    outputs = _run_outputs(tmp_path, "64x64", "promote", [], evaluated)
    summary = run_summary(outputs, 1.0, False, str(tmp_path / "releases"), evaluated)
    steps = [s["step"] for s in summary["steps"]]
    assert steps[steps.index("prune") + 1:steps.index("prune") + 3] == ["evaluate pruned",
                                                                       "evaluate pruned (export mode)"]
    assert [m["model"] for m in summary["models"]][-1] == seventh.label
    assert "pruned (export mode)" in format_summary(summary).split("model ")[1]

    published = {}
    monkeypatch.setattr(runtime, "publish", lambda *args: published.update(evaluations=args[5]) or {"release": "r"})
    publish = publish_component({e.metrics: e.label for e in evaluated})  # the function the DAG's step runs
    artifact = {"metadata": {}, "path": str(tmp_path)}
    inputs = {name: SimpleNamespace(**artifact) for name in ("trained", "retrained", "exported", "int8")}
    inputs.update({e.metrics: SimpleNamespace(metadata={"AP": 0.25 + k / 100}) for k, e in enumerate(evaluated)})
    assert publish(release_root="r", dataset_uri="d", data_version="v", prune_settings="{}", export_settings="{}",
                   inference_spec="{}", serving="{}", int8_verdict="release int8", min_ap=0.0, overrides="{}",
                   **inputs) == "r"
    assert published["evaluations"][seventh.label] == {"AP": 0.31} and RETRAINED in published["evaluations"]
    card = model_card("r", {}, {}, published["evaluations"], {}, "", {"engines": {}, "served": {"note": "-"}})
    assert "| pruned (export mode) | 0.3100 |" in card
