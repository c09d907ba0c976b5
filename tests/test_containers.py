"""The step image built and run for real (``make test-containers``; .ci/run runs it after make test).

Builds ``bpnet-cpu:local`` with podman (or a Docker engine), then: what the image holds (runtime
only, uid 1000, no secret in any layer), a planted failing step failing the run with its own line,
the whole DAG with every step in its own container against a local S3 server (release checked
against its manifest, AP equal to the same DAG run as host processes), and a Ctrl-C that leaves no
container behind. Skipped, with the reason, where no container engine answers.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, local_run_spec
from tools.image_build import DEV_TOOLS, Built, build, engine, installed_packages

pytestmark = pytest.mark.containers
IMAGE = "bpnet-cpu:local"
MODEL_KEY = "containers-test-key-5f1c0e"  # must appear in no image layer


def _client():
    from pipelines.containers import docker_client

    return docker_client()


@pytest.fixture(scope="session")
def image() -> Built:
    """The image, built as ``make image-cpu`` builds it (reusing layers of an earlier build)."""
    try:
        _client()
    except Exception as exc:  # noqa: BLE001 — any failure to reach an engine is a reason to skip
        pytest.skip(f"no container engine answers at $DOCKER_HOST ({exc}); make test-containers sets podman up")
    os.environ["BPNET_MODEL_KEY"] = MODEL_KEY  # as a user's shell has it: the build must not take it in
    return build("cpu", IMAGE)


def run_containers() -> list[str]:
    """Names of the containers (any state) labelled by a bpnet run."""
    from pipelines.containers import RUN_LABEL

    return [c.name for c in _client().containers.list(all=True, filters={"label": RUN_LABEL})]


def test_image_holds_the_runtime_only(image):
    packages = installed_packages(image.tag)
    assert {"bpnet", "tensorflow-cpu", "kfp", "kfp-kubernetes", "minio", "onnxruntime", "tensorboard"} <= set(packages)
    assert not set(packages) & set(DEV_TOOLS), "dev tools in the image"
    assert image.size_bytes > 0


def test_image_runs_as_uid_1000_with_its_entry_point(image):
    out = subprocess.run([engine(), "run", "--rm", "--network", "none", image.tag, "sh", "-c",
                          "id -u && bpnet --version && python3 -c 'import components.runtime, pipelines.dag'"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "1000" and out[1:] == ["bpnet", "0.1.0"]


def test_no_secret_in_any_layer(image, tmp_path):
    archive = tmp_path / "image.tar"
    subprocess.run([engine(), "save", "-o", str(archive), image.tag], check=True, capture_output=True)
    data = archive.read_bytes()
    assert len(data) > 100_000_000  # a real save of the image
    assert MODEL_KEY.encode() not in data  # the key was in the environment of the build
    config = json.loads(subprocess.run([engine(), "image", "inspect", image.tag], capture_output=True, text=True,
                                       check=True).stdout)[0]["Config"]
    assert not [e for e in config.get("Env", []) if e.startswith(("BPNET_MODEL_KEY", "BPNET_S3_", "AWS_"))]


def test_a_failed_step_fails_the_run_with_its_own_line_and_leaves_no_container(image, tmp_path):
    from kfp import dsl, local

    from pipelines.containers import StepContainers, prepare_mounts, runner_args

    @dsl.component(base_image=IMAGE, install_kfp_package=False)
    def planted(text: str) -> str:
        raise SystemExit(f"planted failure: {text}")

    @dsl.pipeline(name="planted")
    def pipeline():
        planted(text="the step's own words")

    root = tmp_path / "root"
    prepare_mounts(1000, root)
    steps = StepContainers("planted-test")
    local.init(runner=local.DockerRunner(**runner_args(1000, {})), pipeline_root=str(root))
    with steps.installed(), pytest.raises(RuntimeError, match="finished with status"):
        pipeline()
    assert steps.failures == [f"{IMAGE} exited 1: planted failure: the step's own words"]
    assert run_containers() == []


def test_whole_dag_in_containers_matches_the_host_run(image, tmp_path, synth_dir, monkeypatch):
    """The DAG of make run in containers (uid 1000, data and release on a local S3 server), then the
    same DAG as host processes: the same figures; the release copied out and checked against its
    manifest exactly as the host-run test checks it."""
    from bpnet.overrides import RunOverrides
    from bpnet.storage import open_store
    from pipelines.local_run import run_local

    monkeypatch.setenv("BPNET_MODEL_KEY", MODEL_KEY)
    overrides = RunOverrides(batch_size=2)
    for run in ("containers", "host"):
        (tmp_path / run).mkdir()
    summary = run_local(local_run_spec(tmp_path / "containers", synth_dir), overrides, image=IMAGE)
    host = run_local(local_run_spec(tmp_path / "host", synth_dir), overrides)

    assert [s["step"] for s in summary["steps"]] == [s["step"] for s in host["steps"]]
    assert abs(summary["metrics"]["AP"] - host["metrics"]["AP"]) <= 0.01
    assert {m["model"]: m["parameters"] for m in summary["models"]} == {m["model"]: m["parameters"]
                                                                        for m in host["models"]}
    assert summary["promotion"] == "promote" and summary["release"]
    release = Path(summary["release_uri"])
    assert release.parent == tmp_path / "containers" / "releases-containers"
    fetched = open_store(str(release)).fetch(tmp_path / "fetched")  # every file listed, sizes and sha256 verified
    assert {f["path"] for f in fetched["files"]} == {p.relative_to(release).as_posix() for p in release.rglob("*")
                                                      if p.is_file() and p.name != "MANIFEST.json"}
    for relative in ("model/bpnet_model.tlt", "onnx/bpnet_model.etlt", "triton/bpnet_onnx/1/model.onnx",
                     "kserve/inferenceservice.yaml", "MODEL_CARD.md"):
        assert (release / relative).is_file(), relative
    run_dir = Path(summary["run_dir"])
    owners = {p.stat().st_uid for p in (run_dir / "train").rglob("*")}
    assert owners == {1000}  # written by the step containers as uid 1000
    assert json.loads((run_dir / "summary.json").read_text())["metrics"] == summary["metrics"]
    assert run_containers() == []


def test_ctrl_c_stops_the_run_and_removes_its_containers(image, tmp_path, synth_dir):
    env = {**os.environ, "BPNET_MODEL_KEY": MODEL_KEY}
    spec = local_run_spec(tmp_path, synth_dir)
    driver = subprocess.Popen([sys.executable, "-m", "pipelines", "local", "--spec", str(spec), "--image", IMAGE],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not run_containers() and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert driver.poll() is None, driver.stderr.read()[-2000:]  # a step container is running
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 128 + signal.SIGINT, err[-2000:]
    assert "interrupted by SIGINT" in err
    assert run_containers() == []
    assert [p.name for p in (tmp_path / "root").iterdir() if not p.name.startswith(".")] == []  # run folder removed
