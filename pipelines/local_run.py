"""``make run``: the whole DAG on this machine through kfp.local, then a summary of what it made.

kfp.local's SubprocessRunner executes each lightweight component as a subprocess of this Python
environment (``use_venv=False``: bpnet is already installed here), in dependency order, writing
artifacts under the run spec's ``pipeline_root``. Kubernetes-side settings are ignored locally.
``make run-containers`` runs the same DAG with every step in its own container of the step image
(``pipelines.containers``; kfp.local's DockerRunner), the data and the release on a local S3 server.

Interruption and reruns (``RunGuard``): every process a run starts inherits a run token in its
environment, so the driver can find its whole step tree (grandchildren such as ``bpnet train``
included) even after an intermediate process died. On SIGINT/SIGTERM the driver sends the tree
SIGTERM, then SIGKILL after a grace period, removes the unfinished run folder and its scratch
folder (the children's TMPDIR and kfp's workspace) and exits 128 + the signal. A rerun starts
over: if a previous driver was SIGKILLed (no handler ran), its lock file in ``pipeline_root`` leads
the rerun to stop that run's leftover processes and remove what it left unfinished. Runs are not
resumed: kfp.local names each run folder by time and keeps no run state, and reusing half a run
would mix outputs of different code; a demo run must be reproducible from scratch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import threading
import time
import uuid
import warnings
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import BaseModel

from bpnet.artifacts import atomic_write_text
from bpnet.errors import StepError, UsageError
from bpnet.layout import EXPORTED_MODE
from bpnet.release import PROMOTE
from bpnet.storage import open_store
from pipelines.arguments import load_run_spec, pipeline_arguments
from pipelines.containers import (
    StepContainers,
    check_image,
    docker_client,
    prepare_mounts,
    remove_run_containers,
    runner_args,
    step_environment,
)
from pipelines.dag import build_pipeline
from pipelines.local_s3 import LocalS3, local_s3
from pipelines.outputs import EVALUATED, GATED, KERAS_EXPORT, ONNX_FP32, ONNX_INT8, UNPRUNED, Evaluated, summary_rows
from pipelines.run_spec import RunSpec

log = logging.getLogger(__name__)

ENGINE_TARGETS = ("gpu_engine_targets", "jetson_engine_targets")  # outputs: the targets the INT8 gate kept, per pool


RUN_TOKEN_ENV = "BPNET_LOCAL_RUN"  # inherited by every process of a run: how the driver finds them
LOCK_FILE = ".local-run.json"
SUMMARY_FILE = "summary.json"  # in a run folder: the run finished (written last, atomically)
GRACE_SECONDS = 10.0  # SIGTERM, then SIGKILL for what is still alive after this


class Interrupted(BaseException):
    """SIGINT/SIGTERM reached the driver (after its step processes were stopped).

    A BaseException, like KeyboardInterrupt, so kfp's ``except Exception`` handlers do not swallow it
    on its way out of the orchestrator."""

    def __init__(self, signum: int, stopped: int):
        self.signum, self.stopped = signum, stopped
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


def run_processes(token: str) -> list[int]:
    """Live processes (other than this one) whose environment carries ``token`` (Linux /proc)."""
    marker = f"{RUN_TOKEN_ENV}={token}".encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path("/proc", entry, "environ").read_bytes()  # empty for zombies: already dead
        except OSError:
            continue
        if marker in environ:
            found.append(int(entry))
    return found


def stop_processes(token: str, grace: float = GRACE_SECONDS) -> int:
    """SIGTERM every process of the run, SIGKILL those alive after ``grace`` s; returns how many."""
    pids = run_processes(token)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in run_processes(token):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while run_processes(token) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not run_processes(token):
            break
    left = run_processes(token)
    if left:
        log.warning("processes %s of the run did not stop even after SIGKILL", left)
    return len(pids)


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (/proc/<pid>/stat field 22): tells a reused pid apart."""
    try:
        stat = Path("/proc", str(pid), "stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


class RunGuard:
    """One local run of ``pipeline_name`` under ``root``: lock, run token, scratch, signal handling.

    ``containers``: the steps run in containers (labelled with the token), which are not processes
    of this machine's process tree: stopping the run also removes them."""

    def __init__(self, root: str | Path, pipeline_name: str, grace: float = GRACE_SECONDS, containers: bool = False):
        self.root, self.name, self.grace, self.containers = Path(root), pipeline_name, grace, containers
        self.token = uuid.uuid4().hex
        self.scratch = self.root / f".scratch-{self.token}"
        self.lock = self.root / LOCK_FILE
        self.before: list[str] = []
        self._saved: dict[str, Any] = {}

    def run_folders(self) -> list[Path]:
        return sorted(p for p in self.root.glob(f"{self.name}-*") if p.is_dir())

    def new_unfinished(self, before: list[str]) -> list[Path]:
        """Run folders made since ``before`` was listed that have no summary.json (not finished)."""
        return [p for p in self.run_folders() if p.name not in before and not (p / SUMMARY_FILE).exists()]

    def clean_stale(self) -> None:
        """Stop and remove what a previous, SIGKILLed driver on this root left behind."""
        try:
            old = json.loads(self.lock.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            old = {}
        if old.get("pid") and _start_time(old["pid"]) == old.get("start_time"):
            raise StepError(f"{self.lock}: another local run (pid {old['pid']}) is using {self.root}; "
                            "wait for it or stop it first")
        stopped = stop_processes(old["token"], self.grace) if old.get("token") else 0
        if old.get("containers") and old.get("token"):
            stopped += remove_run_containers(old["token"])
        removed = self.new_unfinished(old["before"]) if "before" in old else []  # unreadable lock: keep all
        for path in [*removed, Path(old.get("scratch", self.scratch))]:
            shutil.rmtree(path, ignore_errors=True)
        self.lock.unlink(missing_ok=True)
        log.warning("the previous run (pid %s) was killed: stopped %d leftover process(es), removed %s",
                    old.get("pid", "?"), stopped, ", ".join(str(p) for p in removed) or "no run folder")

    def __enter__(self) -> RunGuard:
        self.root.mkdir(parents=True, exist_ok=True)
        self.clean_stale()
        self.before = [p.name for p in self.run_folders()]
        (self.scratch / "workspace").mkdir(parents=True)
        atomic_write_text(self.lock, json.dumps({
            "pid": os.getpid(), "start_time": _start_time(os.getpid()), "token": self.token,
            "scratch": str(self.scratch), "before": self.before, "containers": self.containers}) + "\n")
        self._saved = {name: os.environ.get(name) for name in (RUN_TOKEN_ENV, "TMPDIR")}
        os.environ[RUN_TOKEN_ENV], os.environ["TMPDIR"] = self.token, str(self.scratch)
        if threading.current_thread() is threading.main_thread():  # Python delivers signals there only
            self._saved["handlers"] = {sig: signal.signal(sig, self._on_signal)
                                       for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        log.warning("%s: stopping the run's processes", signal.Signals(signum).name)
        raise Interrupted(signum, self.stop())

    def stop(self) -> int:
        """Stop every process (and container) of the run; returns how many."""
        stopped = stop_processes(self.token, self.grace)
        return stopped + (remove_run_containers(self.token) if self.containers else 0)

    def __exit__(self, exc_type, exc, tb) -> None:
        for sig, handler in self._saved.pop("handlers", {}).items():
            signal.signal(sig, handler)
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if exc_type is not None and not issubclass(exc_type, Exception):  # interrupted: nothing to keep
            self.stop()
            removed = self.new_unfinished(self.before)
            for path in removed:
                shutil.rmtree(path, ignore_errors=True)
            if isinstance(exc, Interrupted):
                exc.args = (f"{exc.args[0]}: stopped {exc.stopped} step process(es), removed "
                            f"{', '.join(str(p) for p in removed) or 'no run folder'}; rerun to start over",)
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.lock.unlink(missing_ok=True)


def run_local(spec_path: str | Path, overrides: BaseModel | None = None, image: str | None = None) -> dict[str, Any]:
    """Run the pipeline locally (with the typed run parameters ``overrides``, a RunOverrides);
    return (and write beside the run) the summary.

    ``image``: every step in its own container of that image (``make run-containers``), with the
    dataset and the release on a local S3 server; else every step as a host process (``make run``)."""
    spec = load_run_spec(spec_path).for_local_run(spec_path)
    if not os.environ.get("BPNET_MODEL_KEY"):
        raise UsageError("not set (or empty) — the model key is taken from the environment only; export it",
                         field="$BPNET_MODEL_KEY")
    if image is None:
        return _run(spec, overrides)
    check_image(docker_client(), image)
    with local_s3() as s3:
        local_releases = Path(spec.release.root)
        spec = in_containers(spec, image, s3)
        summary = _run(spec, overrides, s3)
        if summary["release"]:  # moto keeps it in memory: copy it out, verified against its manifest
            target = local_releases.with_name(local_releases.name + "-containers") / summary["release"]
            open_store(summary["release_uri"]).fetch(target)
            summary["release_uri"] = str(target)
    return summary


def in_containers(spec: RunSpec, image: str, s3: LocalS3) -> RunSpec:
    """``spec`` as its container run uses it: every step on ``image``, the dataset folder uploaded to
    the local S3 server and the release root there (a cluster's run spec names s3:// URIs itself)."""
    dataset = spec.dataset
    if "://" not in dataset.uri:
        dataset = dataset.model_copy(update={"uri": s3.upload(dataset.uri, f"datasets/{Path(dataset.uri).name}")})
    release = spec.release
    if "://" not in release.root:
        release = release.model_copy(update={"root": f"{s3.root}/releases"})
    images = spec.images.model_copy(update={"gpu": image})
    return spec.model_copy(update={"images": images, "dataset": dataset, "release": release})


def _run(spec: RunSpec, overrides: BaseModel | None, s3: LocalS3 | None = None) -> dict[str, Any]:
    """The DAG through kfp.local: steps as host processes, or in containers when ``s3`` is given."""
    from kfp import local

    arguments = pipeline_arguments(spec, overrides)
    pipeline = build_pipeline(spec, arguments)
    start = time.perf_counter()
    containers = s3 is not None
    with (RunGuard(spec.pipeline_root, pipeline.pipeline_spec.pipeline_info.name, containers=containers) as guard,
          warnings.catch_warnings()):
        workspace = guard.scratch / "workspace"
        steps = StepContainers(guard.token)
        if containers:
            uid = spec.run_as_user or 1000
            prepare_mounts(uid, Path(spec.pipeline_root), workspace)
            runner = local.DockerRunner(**runner_args(uid, step_environment(s3.environment)))
        else:
            runner = local.SubprocessRunner(use_venv=False)
        local.init(runner=runner, pipeline_root=spec.pipeline_root, workspace_root=str(workspace))
        # kfp warns when an image name lacks "python"; locally the image is not used at all.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
        # ... and that Kubernetes-side settings (display names included) do nothing locally: documented.
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        try:
            with steps.installed() if containers else contextlib.nullcontext():
                task = pipeline()
        except RuntimeError as exc:  # kfp.local's "... finished with status FAILURE": the step logged why
            if "finished with status" not in str(exc):
                raise
            said = f" Its container: {steps.failures[-1]}" if steps.failures else " Its log above says why."
            raise StepError(f"{exc}{said}") from None
    summary = run_summary(task.outputs, time.perf_counter() - start, spec.engines.enabled, spec.release.root)
    run_dir = Path(task.outputs["model"].uri).parents[1]  # <root>/<run>/<task>/<output>
    write_summary(run_dir, summary)
    summary["run_dir"] = str(run_dir)
    return summary


def run_summary(outputs: dict[str, Any], seconds: float, engines_enabled: bool, release_root: str,
                evaluated: tuple[Evaluated, ...] = EVALUATED) -> dict[str, Any]:
    """``summarize`` and what the run decided, from its outputs (so the values the run used, run
    parameters included): the gates' verdicts, the aspect-ratio mode the exported models were
    evaluated at, the release, the engine targets built."""
    from bpnet.release import read_latest

    summary = summarize(outputs, seconds, evaluated)
    summary["promotion"] = outputs["promotion"]
    summary["int8"] = outputs["int8_verdict"]
    summary["same_mode"] = same_mode(summary["models"], outputs["exported_model"].metadata["input_shape"])
    latest = read_latest(release_root) if summary["promotion"] == PROMOTE else None
    summary["release"] = latest["release"] if latest else None
    summary["release_uri"] = latest["uri"] if latest else None
    summary["engines"] = engines_built(engines_enabled, summary["promotion"],
                                       [t["name"] for key in ENGINE_TARGETS for t in outputs[key]])
    return summary


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """``summary.json``, atomically: ``RunGuard`` takes a run folder with it as finished."""
    atomic_write_text(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")


def engines_built(enabled: bool, promotion: str, targets: list[str]) -> str:
    """What became of the TensorRT engines: the targets built (``targets``: those the
    ``engine_targets`` parameter chose and the INT8 gate kept; built only for a promoted model),
    or why there are none."""
    if not enabled:
        return "not built: engines.enabled is false (kfp.local has no TensorRT or GPU; they build on the cluster)"
    if promotion != PROMOTE:
        return f"not built: the model was not promoted ({promotion})"
    if not targets:
        return "none built: no engine target left after the engine_targets parameter and the INT8 gate"
    return "built: " + ", ".join(targets)


def summarize(outputs: dict[str, Any], seconds: float, evaluated: tuple[Evaluated, ...] = EVALUATED
              ) -> dict[str, Any]:
    """Per step: time, figures and where its artifacts are (``pipelines.outputs.summary_rows``);
    per evaluated model its size and AP; the gated model's metrics."""
    steps = []
    for row in summary_rows(evaluated):
        artifact = outputs[row.output]
        steps.append({"step": row.label, "seconds": artifact.metadata.get("seconds"), "output": artifact.uri,
                      **{f: artifact.metadata[f] for f in row.figures if f in artifact.metadata}})
    pruned = outputs["pruned_model"].metadata
    models = []
    for e in evaluated:
        flops = pruned.get("gflops_before") if e.label == UNPRUNED else pruned.get("gflops")
        model = outputs[e.model]
        parameters = model.metadata.get("parameters", outputs["retrained_model"].metadata.get("parameters"))
        models.append({"model": e.label, "parameters": parameters,
                       f"gflops_at_{pruned.get('flops_input_shape', '?')}": flops,
                       **{k: outputs[e.metrics].metadata.get(k) for k in ("AP", "AP50")}, "file": model.uri})
    gated = {e.label: e for e in evaluated}[GATED]
    return {"seconds": round(seconds, 1), "steps": steps, "models": models,
            "metrics": dict(outputs[gated.metrics].metadata),
            "reports": {"evaluation": outputs["evaluation_report"].uri,
                        "inference": outputs["inference_report"].uri}}


def same_mode(models: list[dict[str, Any]], input_shape: str) -> dict[str, Any]:
    """Keras, ONNX fp32 and INT8 AP at the exported models' input size (``HxW``, as the export
    reports it) and padding mode: the export loss and the INT8 drop, like with like."""
    ap = {m["model"]: m["AP"] for m in models}
    keras, fp32, int8 = ap[KERAS_EXPORT], ap[ONNX_FP32], ap[ONNX_INT8]
    return {"mode": f"{EXPORTED_MODE} {input_shape}", "Keras": keras, ONNX_FP32: fp32,
            ONNX_INT8: int8, "export_loss": None if None in (keras, fp32) else round(keras - fp32, 4),
            "int8_drop": None if None in (fp32, int8) else round(fp32 - int8, 4)}


METRIC_ORDER = ("AP", "AP50", "AP75", "AP_medium", "AP_large", "AR")


def _figure(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():  # KFP metadata stores every number as a float
        value = int(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}" if isinstance(value, float) else str(value)


def _short(path: str) -> str:
    """A path relative to the working directory when it is below it (as make run prints them)."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def format_summary(summary: dict[str, Any]) -> str:
    metrics = summary["metrics"]
    step_width = max(18, 2 + max(len(s["step"]) for s in summary["steps"]))  # label widths: the longest label fits
    model_width = max(12, 2 + max(len(m["model"]) for m in summary["models"]))
    lines = [f"{'step':<{step_width}}{'seconds':>9}  figures", "-" * 72]
    for step in summary["steps"]:
        figures = {k: v for k, v in step.items() if k not in ("step", "seconds", "output")}
        text = ", ".join(f"{k} {_figure(v)}" for k, v in figures.items())
        lines.append(f"{step['step']:<{step_width}}{step['seconds'] or 0:>9.1f}  {text}")
    lines.append(f"{'total':<{step_width}}{summary['seconds']:>9.1f}")
    flops_key = next(k for k in summary["models"][0] if k.startswith("gflops_at_"))
    lines += ["", f"{'model':<{model_width}}{'parameters':>12}{'GFLOPs @' + flops_key[10:]:>18}{'AP':>8}{'AP50':>8}"]
    for m in summary["models"]:
        lines.append(f"{m['model']:<{model_width}}{_figure(m['parameters']):>12}{_figure(m[flops_key]):>18}"
                     f"{m['AP'] or 0:>8.3f}{m['AP50'] or 0:>8.3f}")
    if "same_mode" in summary:
        m = summary["same_mode"]
        lines += ["", f"same aspect-ratio mode ({m['mode']}):  Keras AP {m['Keras'] or 0:.3f}  "
                      f"ONNX fp32 AP {m['ONNX fp32'] or 0:.3f}  ONNX INT8 AP {m['ONNX INT8'] or 0:.3f}",
                  f"INT8 gate: {summary['int8']}"]
    ordered = [k for k in METRIC_ORDER if k in metrics]
    lines += ["", "retrained model, val split: " + "  ".join(f"{k} {metrics[k]:.3f}" for k in ordered), "",
              "artifacts:"]
    rows = [(s["step"], _short(s["output"])) for s in summary["steps"]]
    rows += [(f"{name} report", _short(uri)) for name, uri in summary["reports"].items()]
    if "engines" in summary:
        rows.append(("TensorRT engines", summary["engines"]))
    if summary.get("release"):
        rows.append(("release (latest)", _short(summary["release_uri"])))
    elif "promotion" in summary:
        rows.append(("release", f"none — {summary['promotion']}"))
    if "run_dir" in summary:
        rows.append(("summary", f"{_short(summary['run_dir'])}/{SUMMARY_FILE}"))
    width = max(len(label) for label, _ in rows) + 2  # the longest label ("evaluate Keras (export mode)")
    lines += [f"  {label:<{width}}{value}" for label, value in rows]
    return "\n".join(lines)
