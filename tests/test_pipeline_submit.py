"""pipeline-run / pipeline-schedule / pipeline-unschedule with the real kfp.Client against a
recording stand-in of the KFP v2beta1 REST API on 127.0.0.1."""

from __future__ import annotations

import pytest

from pipelines.__main__ import main
from tests.conftest import REPO, cluster_spec
from tests.kfp_server import FakeKfpServer

TOKEN = "tok-3e9f1b77-not-for-yaml"


@pytest.fixture
def kfp_server(monkeypatch, tmp_path):
    with FakeKfpServer() as server:
        monkeypatch.setenv("KF_PIPELINES_ENDPOINT", server.url)
        monkeypatch.setenv("KF_PIPELINES_TOKEN", TOKEN)
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/kfp context of the machine's user
        monkeypatch.delenv("KF_PIPELINES_UI_ENDPOINT", raising=False)
        yield server


def test_pipeline_run_uploads_pipeline_and_creates_run_with_spec_parameters(kfp_server, tmp_path, capsys):
    spec = cluster_spec(tmp_path)
    build = tmp_path / "build"
    assert main(["run", "--spec", str(spec), "--build_dir", str(build)]) == 0

    uploads = kfp_server.requests("POST", "/pipelines/upload")
    assert len(uploads) == 1 and uploads[0].query["name"] == ["bpnet"]
    assert kfp_server.state.uploads[0] == (build / "bpnet.yaml").read_bytes()  # the compiled package itself
    experiments = kfp_server.requests("POST", "/experiments")
    assert [r.json()["display_name"] for r in experiments] == ["bodyposenet"]
    assert experiments[0].json()["namespace"] == "team-pose"

    [run] = kfp_server.state.runs.values()
    experiment_id = next(iter(kfp_server.state.experiments))
    assert run["experiment_id"] == experiment_id
    pipeline_id = next(iter(kfp_server.state.pipelines))
    assert run["pipeline_version_reference"] == {
        "pipeline_id": pipeline_id, "pipeline_version_id": kfp_server.state.versions[pipeline_id][0][
            "pipeline_version_id"]}
    params = run["runtime_config"]["parameters"]
    assert params["dataset_uri"] == "s3://datasets/coco2017-person"
    assert params["data_version"] == "v7"
    assert params["train_spec"] == (REPO / "specs" / "bpnet_train_m1_coco.yaml").read_text()
    assert params["pose_config"] == (REPO / "specs" / "bpnet_18joints.json").read_text()
    assert params["num_shards"] == 8 and params["report_images"] == 8
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in kfp_server.state.requests)
    assert f"{kfp_server.url}/#/runs/details/{run['run_id']}" in capsys.readouterr().out

    # A second submission adds a version to the existing pipeline and runs that version.
    assert main(["run", "--spec", str(spec), "--build_dir", str(build)]) == 0
    assert len(kfp_server.requests("POST", "/pipelines/upload_version")) == 1
    latest = kfp_server.state.versions[pipeline_id][-1]["pipeline_version_id"]
    assert list(kfp_server.state.runs.values())[-1]["pipeline_version_reference"]["pipeline_version_id"] == latest
    assert len(kfp_server.state.experiments) == 1  # the experiment is reused


def test_schedule_creates_recurring_run_from_spec_cron_and_replaces_it(kfp_server, tmp_path):
    spec = cluster_spec(tmp_path, schedule={"cron": "30 2 * * 1-5", "name": "nightly", "max_concurrency": 1})
    build = tmp_path / "build"
    assert main(["schedule", "--spec", str(spec), "--build_dir", str(build)]) == 0
    [job] = kfp_server.state.recurring.values()
    assert job["display_name"] == "nightly"
    assert job["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * 1-5"  # five fields -> KFP's six
    assert int(job["max_concurrency"]) == 1 and job["no_catchup"] is True
    assert job["mode"] == "ENABLE"
    assert job["experiment_id"] == next(iter(kfp_server.state.experiments))
    assert job["runtime_config"]["parameters"]["dataset_uri"] == "s3://datasets/coco2017-person"

    assert main(["schedule", "--spec", str(spec), "--build_dir", str(build)]) == 0
    assert len(kfp_server.requests("DELETE", f"/recurringruns/{job['recurring_run_id']}")) == 1
    assert len(kfp_server.state.recurring) == 1
    # the replacement was created before the old one was deleted: never a moment without a schedule
    order = [(r.method, r.path) for r in kfp_server.state.requests if "recurringruns" in r.path]
    assert order.index(("POST", "/apis/v2beta1/recurringruns")) < order.index(
        ("DELETE", f"/apis/v2beta1/recurringruns/{job['recurring_run_id']}"))

    assert main(["unschedule", "--spec", str(spec)]) == 0
    assert kfp_server.state.recurring == {}


def test_unschedule_finds_recurring_runs_across_pages(kfp_server, tmp_path):
    spec = cluster_spec(tmp_path, schedule={"cron": "@daily", "name": "nightly"})
    assert main(["schedule", "--spec", str(spec), "--build_dir", str(tmp_path)]) == 0
    experiment_id = next(iter(kfp_server.state.experiments))
    for i in range(150):  # other recurring runs in the same experiment push ours off the first page
        kfp_server.state.recurring[f"other-{i}"] = {"recurring_run_id": f"other-{i}", "display_name": f"o{i}",
                                                   "experiment_id": experiment_id}
    kfp_server.state.recurring["late"] = {"recurring_run_id": "late", "display_name": "nightly",
                                          "experiment_id": experiment_id}
    assert main(["unschedule", "--spec", str(spec)]) == 0
    assert not any(r["display_name"] == "nightly" for r in kfp_server.state.recurring.values())
    assert len(kfp_server.state.recurring) == 150


def test_multi_user_upload_goes_into_the_profile_namespace(kfp_server, tmp_path):
    kfp_server.state.multi_user = True
    spec = cluster_spec(tmp_path)  # kfp.namespace: team-pose
    assert main(["run", "--spec", str(spec), "--build_dir", str(tmp_path)]) == 0
    [upload] = kfp_server.requests("POST", "/pipelines/upload")
    assert upload.query["namespace"] == ["team-pose"]
    assert kfp_server.requests("GET", "/pipelines")[0].query["namespace"] == ["team-pose"]
    assert main(["run", "--spec", str(spec), "--build_dir", str(tmp_path)]) == 0  # found again: new version
    assert len(kfp_server.requests("POST", "/pipelines/upload_version")) == 1


def test_no_secret_reaches_the_server_the_package_or_the_log(kfp_server, tmp_path, monkeypatch, capsys, caplog):
    secrets = {"BPNET_S3_ACCESS_KEY": "AKIA-planted-0042", "BPNET_S3_SECRET_KEY": "s3cr3t-planted-0042",
               "BPNET_MODEL_KEY": "model-key-planted-0042", "AWS_SECRET_ACCESS_KEY": "aws-planted-0042"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    build = tmp_path / "build"
    assert main(["run", "--spec", str(cluster_spec(tmp_path)), "--build_dir", str(build)]) == 0
    assert main(["schedule", "--spec", str(cluster_spec(tmp_path, schedule={"cron": "@daily"})),
                 "--build_dir", str(build)]) == 0
    seen = b"".join(r.body + str(r.query).encode() + str(r.headers).encode() for r in kfp_server.state.requests)
    seen += (build / "bpnet.yaml").read_bytes() + capsys.readouterr().out.encode() + caplog.text.encode()
    assert TOKEN.encode() in seen  # the check can see what was sent: the token travels in a header
    for value in secrets.values():
        assert value.encode() not in seen


def test_invalid_cron_is_a_spec_error_before_any_request(kfp_server, tmp_path, capsys):
    spec = cluster_spec(tmp_path, schedule={"cron": "0 25 * * *"})
    assert main(["schedule", "--spec", str(spec)]) == 2
    err = capsys.readouterr().err
    assert f"spec error: {spec}: schedule.cron: \"0 25 * * *\" — hours: 25 is outside 0-23" in err
    assert kfp_server.state.requests == []


def test_missing_host_is_explained(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    assert main(["run", "--spec", str(cluster_spec(tmp_path)), "--build_dir", str(tmp_path)]) == 1
    assert "set kfp.host in the run spec or $KF_PIPELINES_ENDPOINT" in caplog.text


def test_server_refusal_is_reported_not_raised(kfp_server, tmp_path, caplog):
    kfp_server.state.refuse["POST /runs"] = 403
    assert main(["run", "--spec", str(cluster_spec(tmp_path)), "--build_dir", str(tmp_path)]) == 1
    assert "Kubeflow Pipelines said 403" in caplog.text and "permission denied" in caplog.text


def test_unreachable_server_is_reported(tmp_path, monkeypatch, caplog):
    from tests.conftest import cluster_spec, free_port

    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["run", "--spec", str(cluster_spec(tmp_path)), "--build_dir", str(tmp_path)]) == 1
    assert "cannot reach Kubeflow Pipelines: MaxRetryError" in caplog.text
