"""The multi-worker launcher through the official ``kubernetes`` client against a fake API server
on 127.0.0.1 (tests/fake_kube.py): success, failure with the job's reason, re-attaching after a
launcher restart, SIGTERM deleting the job, and one clear line for 403, 404 and no answer."""

from __future__ import annotations

import io
import os
import signal
import threading

import pytest
from kubernetes import client

from components.launcher import Launcher, LaunchError
from components.training_jobs import JobRequest, job_manifest, job_name
from tests.fake_kube import FakeApiServer, FakeCluster, condition

CHIEF = {"trainjob": {"jobset.sigs.k8s.io/jobset-name": "{name}", "batch.kubernetes.io/job-completion-index": "0"},
         "tfjob": {"training.kubeflow.org/job-name": "{name}", "training.kubeflow.org/replica-type": "worker",
                   "training.kubeflow.org/replica-index": "0"}}
DONE = {"trainjob": "Complete", "tfjob": "Succeeded"}


def manifest(engine: str) -> dict:
    req = JobRequest(name=job_name("run-7", "train"), namespace="team", image="img", workers=2, task="{}")
    return job_manifest(engine, req)


def launch(server: FakeApiServer, engine: str, **kw) -> tuple[Launcher, io.StringIO]:
    out = io.StringIO()
    api = client.ApiClient(client.Configuration(host=server.host))
    return Launcher(api, engine, "team", poll_seconds=0.01, out=out, **kw), out


def cluster_for(engine: str, **kw) -> FakeCluster:
    name = manifest(engine)["metadata"]["name"]
    labels = {k: v.format(name=name) for k, v in CHIEF[engine].items()}
    return FakeCluster(chief_labels=labels, **kw)


@pytest.mark.parametrize("engine", ["trainjob", "tfjob"])
def test_success_streams_the_chief_log_until_the_job_completes(engine):
    cluster = cluster_for(engine, script=[[], [], [condition("Created")], [condition(DONE[engine])]],
                          chief_log=["epoch 1 loss 3.2", "epoch 2 loss 2.9", "saved model"])
    with FakeApiServer(cluster) as server:
        launcher, out = launch(server, engine)
        job = launcher.run(manifest(engine))
    assert job["kind"] == ("TrainJob" if engine == "trainjob" else "TFJob")
    assert out.getvalue().splitlines() == [f"[chief-pod] {line}" for line in cluster.chief_log]
    assert [m for m, _ in cluster.requests].count("POST") == 1


def test_failure_ends_the_step_with_the_jobs_reason():
    cluster = cluster_for("trainjob", script=[[], [condition("Failed", "JobSetFailed", "worker 1:\n OOMKilled")]])
    with FakeApiServer(cluster) as server, pytest.raises(LaunchError) as err:
        launch(server, "trainjob")[0].run(manifest("trainjob"))
    assert str(err.value).endswith("failed: JobSetFailed: worker 1: OOMKilled") and "\n" not in str(err.value)


def test_a_restarted_launcher_reattaches_to_the_job_of_its_run_and_task():
    cluster = cluster_for("trainjob", script=[[condition("Complete")]])
    job = manifest("trainjob")
    cluster.objects[job["metadata"]["name"]] = {**job, "spec": {**job["spec"], "marker": "first launcher"}}
    with FakeApiServer(cluster) as server:
        result = launch(server, "trainjob")[0].run(manifest("trainjob"))
    assert result["spec"]["marker"] == "first launcher"  # followed the existing job, did not replace it
    assert len(cluster.objects) == 1


def test_sigterm_deletes_the_job():
    cluster = cluster_for("tfjob", script=[[]])  # never ends on its own
    name = manifest("tfjob")["metadata"]["name"]
    with FakeApiServer(cluster) as server:
        launcher, _ = launch(server, "tfjob")
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        with pytest.raises(LaunchError, match=f"cancelled: TFJob {name} was deleted"):
            launcher.run(manifest("tfjob"))
        timer.join()
    assert name not in cluster.objects and ("DELETE", f"/apis/kubeflow.org/v1/namespaces/team/tfjobs/{name}") in \
        cluster.requests
    assert signal.getsignal(signal.SIGTERM) is not launcher  # the previous handler is back
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.default_int_handler) or callable(
        signal.getsignal(signal.SIGTERM))


def test_a_job_past_the_step_timeout_is_deleted():
    cluster = cluster_for("trainjob", script=[[]])
    with FakeApiServer(cluster) as server, pytest.raises(LaunchError, match="did not finish within 0 s"):
        launch(server, "trainjob", timeout_seconds=0)[0].run(manifest("trainjob"))
    assert not cluster.objects


@pytest.mark.parametrize(("errors", "delay", "expected"), [
    ({("POST", "trainjobs"): 403}, 0.0, "forbidden: the pipeline's service account may not create team/"),
    ({("POST", "trainjobs"): 404}, 0.0, "TrainJob (trainer.kubeflow.org/v1alpha1) is not served by this cluster"),
    ({("GET", "trainjobs"): 404}, 0.0, "is gone (deleted outside this run?)"),
    ({}, 5.0, "did not answer (create team/"),
])
def test_api_errors_are_one_clear_line(errors, delay, expected):
    """(A loaded machine can take a while to answer: only the no-answer case has a short timeout.)"""
    cluster = cluster_for("trainjob", script=[[]], errors=errors, delay=delay)
    with FakeApiServer(cluster) as server, pytest.raises(LaunchError) as err:
        launch(server, "trainjob", request_timeout=1.0 if delay else 30.0)[0].run(manifest("trainjob"))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_the_step_launches_a_job_and_gets_the_model_the_chief_uploaded(synth_dir, moto_server, monkeypatch, tmp_path):
    """The whole multi-worker step but the cluster: the launcher creates the job on the fake API
    server, whose "engine" runs the job's worker (alone here: the two-process case is
    tests/test_distributed.py) against the S3 server; the chief's model lands in the step's folder."""
    from bpnet.layout import MODEL_FILE
    from bpnet.model.io import load_model
    from bpnet.storage import S3Store, open_store
    from components import runtime
    from components.distributed import JobTemplate, WorkerTask, launch, task_of
    from components.worker import run_worker
    from tests.conftest import write_train_spec

    for name, value in {"BPNET_S3_ENDPOINT": f"http://{moto_server.endpoint}", "BPNET_S3_ACCESS_KEY": "testing",
                        "BPNET_S3_SECRET_KEY": "testing", "BPNET_MODEL_KEY": "dist"}.items():
        monkeypatch.setenv(name, value)
    S3Store("s3://mlpipeline").client.make_bucket("mlpipeline")
    runtime.dataset_convert(str(synth_dir), (synth_dir / "coco_spec.json").read_text(), tmp_path / "train_data",
                            tmp_path / "val_data", True, 1)
    root = "minio://mlpipeline/v2/artifacts/bpnet/run-3"
    for split in ("train_data", "val_data"):
        open_store(f"s3://mlpipeline/v2/artifacts/bpnet/run-3/{split}").upload_tree(tmp_path / split)
    spec = write_train_spec(tmp_path / "t.yaml", synth_dir, tmp_path / "unbound", num_epoch=1).read_text()

    cluster = FakeCluster(script=[[]])
    ran = []

    def engine(job: dict) -> None:
        def work():
            try:
                ran.append(run_worker(task_of(job), tmp_path / "pod"))
                cluster.script = [[condition("Complete")]]
            except Exception as exc:  # the job fails with the worker's message
                cluster.script = [[condition("Failed", "WorkerFailed", str(exc))]]
        threading.Thread(target=work, daemon=True).start()

    cluster.on_create = engine
    task = WorkerTask(f"{root}/train_data", f"{root}/val_data", spec, "", f"{root}/model.workers")
    with FakeApiServer(cluster) as server:
        api = client.ApiClient(client.Configuration(host=server.host))
        metadata = launch(JobTemplate("trainjob", "img", 2, namespace="team", poll_seconds=0.2), task, "run-3",
                          "train", tmp_path / "model", api=api)
    assert ran and metadata["steps"] == ran[0]["steps"] > 0 and metadata["workers"] == 2
    load_model(tmp_path / "model" / MODEL_FILE, key="dist")
    assert open_store("s3://mlpipeline/v2/artifacts/bpnet/run-3/model.workers/checkpoints").exists()  # for a rerun
