"""Releases: one complete, checksummed folder per publish, and a ``latest`` pointer that only
moves forward.

A release is published to ``<release_root>/<release_id>/`` (a folder or an ``s3://`` prefix)
through ``Store.upload_tree``, whose manifest is written last. Release ids are unique
per publish (UTC second, model digest and a random suffix), and a prefix that already holds
anything is refused: a published release is never overwritten, so a retry or a second run of a
cached model cannot take the manifest away from the release ``latest`` names.

``latest`` moves only by the promotion rule, re-checked at the moment of the swap: a
compare-and-swap on the pointer (``Store.write_if``: the ETag with ``If-Match`` on S3, the
content's sha256 under an ``flock`` in a folder). A writer that loses the race re-reads the
pointer, re-checks the rule against the winner and tries again.

So of two concurrent publishers the better model ends up in ``latest`` whatever the order, and a
release that loses (a lower AP than the latest) stays published but not promoted.

``latest.json``: ``{"release": id, "uri": <release folder>, "metrics": {...}, "published": UTC}``.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpnet.artifacts import ArtifactError, atomic_write_text, parse_manifest, sha256_file
from bpnet.layout import (
    CALIBRATION_CACHE,
    CALIBRATION_TENSORFILE,
    ENGINE_SUFFIX,
    EXPORT_SETTINGS_FILE,
    EXPORTED_FILE,
    METRICS_FILE,
    MODEL_FILE,
    POSE_CONFIG_FILE,
    SDK_CALIBRATION_CACHE,
    SDK_EXPORTED_FILE,
    TRAIN_SPEC_FILE,
    engine_record,
)
from bpnet.settings import ReleaseServing, Server
from bpnet.specs.inference import InferenceSpec
from bpnet.specs.train import NormalizationParams
from bpnet.storage import MANIFEST_NAME, LocalStore, StorageError, open_store, remove_abandoned

if TYPE_CHECKING:
    from bpnet.infer.decode import DecodeParams
    from bpnet.pose import Skeleton

log = logging.getLogger(__name__)

LATEST = "latest.json"
SWAP_ATTEMPTS = 20  # compare-and-swap retries when other publishers keep winning the race


def _join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}"


def new_release_id(model_digest: str) -> str:
    """A release id unique per publish and sortable by time: ``YYYYmmdd-HHMMSS-<digest8>-<random6>``."""
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{model_digest[:8]}-{secrets.token_hex(3)}"


def read_latest(release_root: str) -> dict[str, Any] | None:
    """The ``latest`` pointer, or None when nothing was released yet; an unreadable pointer is an
    ArtifactError (the promotion gate must not compare against a guess)."""
    return _pointer(open_store(release_root).read_bytes(LATEST), release_root)


def _pointer(raw: bytes | None, release_root: str) -> dict[str, Any] | None:
    """``latest.json``'s content checked (None when there is none)."""
    if raw is None:
        return None
    try:
        latest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{release_root}/{LATEST}: not a release pointer ({exc}); restore it from the "
                            "releases listed beside it or remove it to release afresh") from exc
    if not isinstance(latest, dict) or "release" not in latest:
        raise ArtifactError(f"{release_root}/{LATEST}: not a release pointer (no 'release' key)")
    metrics = latest.get("metrics", {})
    if not isinstance(metrics, dict) or not isinstance(metrics.get("AP", 0.0), int | float):
        raise ArtifactError(f"{release_root}/{LATEST}: not a release pointer ('metrics' is not an object of "
                            "numbers)")
    return latest


def promotion_decision(ap: float, min_ap: float, previous: dict[str, Any] | None,
                       metric: str = "AP") -> tuple[bool, str]:
    """Promote only if ``ap`` reaches ``min_ap`` and is not below the latest release's."""
    if not math.isfinite(ap):
        return False, f"{metric} is {ap}: not a number"
    if not ap >= min_ap:
        return False, f"{metric} {ap:.4f} is below the minimum {min_ap:.4f}"
    if previous is not None:
        before = float(previous.get("metrics", {}).get(metric, float("-inf")))
        if ap < before:
            return False, f"{metric} {ap:.4f} is below the latest release {previous['release']} ({before:.4f})"
        return True, f"{metric} {ap:.4f} >= minimum {min_ap:.4f} and >= release {previous['release']} ({before:.4f})"
    return True, f"{metric} {ap:.4f} >= minimum {min_ap:.4f} (first release)"


def int8_decision(fp32_ap: float, int8_ap: float, max_drop: float) -> tuple[bool, str]:
    """The INT8 quality gate: INT8 ships only if its AP >= fp32 AP - ``max_drop``."""
    floor = fp32_ap - max_drop
    if math.isfinite(int8_ap) and math.isfinite(fp32_ap) and int8_ap >= floor:
        return True, f"INT8 AP {int8_ap:.4f} >= fp32 AP {fp32_ap:.4f} - {max_drop:.4f} (release.max_int8_ap_drop)"
    return False, (f"INT8 not released: INT8 AP {int8_ap:.4f} < fp32 AP {fp32_ap:.4f} - {max_drop:.4f} "
                   "(release.max_int8_ap_drop), so only fp16/fp32 engines are built; calibrate on more batches "
                   "(export.cal_batches) or add test images (a small val split makes AP noisy)")


def advance_latest(release_root: str, pointer: dict[str, Any], min_ap: float = 0.0,
                   metric: str = "AP") -> tuple[bool, str]:
    """Point ``latest`` at ``pointer``'s release if the promotion rule holds against the pointer
    as it is at the swap; (moved, why)."""
    ap = float(pointer["metrics"].get(metric, float("nan")))
    data = (json.dumps(pointer, indent=2) + "\n").encode()
    store = open_store(release_root)
    for attempt in range(1, SWAP_ATTEMPTS + 1):
        found = store.read_versioned(LATEST)
        current, version = (_pointer(found[0], release_root), found[1]) if found else (None, None)
        ok, reason = promotion_decision(ap, min_ap, current, metric)
        if not ok:
            return False, reason
        if store.write_if(data, LATEST, version):
            return True, reason
        log.info("latest changed while publishing %s (attempt %d): re-checking the rule", pointer["release"],
                 attempt)
        time.sleep(0.05 * attempt)
    raise StorageError(f"{_join(release_root, LATEST)}: could not swap after {SWAP_ATTEMPTS} attempts "
                       "(other publishers kept changing it)")


def publish_release(src_dir: str | Path, release_root: str, release_id: str, metrics: dict[str, Any],
                    min_ap: float = 0.0, metadata: dict[str, Any] | None = None) -> dict:
    """Publish ``src_dir`` as the new release ``release_id`` (``metadata`` joins the manifest's),
    then move ``latest`` to it if the promotion rule still holds. The returned pointer has
    ``promoted`` and ``reason``. An unreadable ``latest`` stops it before anything is uploaded; a
    release id already taken (published, or being published by another writer) is refused.
    Releases a killed local publish left incomplete are removed first."""
    read_latest(release_root)
    if isinstance(open_store(release_root), LocalStore):
        remove_abandoned(release_root)
    dest = _join(release_root, release_id)
    manifest = open_store(dest).create_tree(src_dir, metadata={"release": release_id, "metrics": metrics,
                                                               **(metadata or {})})
    pointer = {"release": release_id, "uri": dest, "metrics": metrics,
               "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    promoted, reason = advance_latest(release_root, pointer, min_ap)
    if promoted:
        log.info("released %s (%d files); latest -> %s (%s)", dest, len(manifest["files"]), release_id, reason)
    else:
        log.warning("released %s (%d files) but latest stays: %s", dest, len(manifest["files"]), reason)
    return {**pointer, "promoted": promoted, "reason": reason}


def fetch_latest_file(release_root: str, relative: str, local: str | Path) -> dict[str, Any]:
    """Download one file of the latest release, checked against that release's manifest (size and
    sha256); returns the ``latest`` pointer."""
    pointer = read_latest(release_root)
    if pointer is None:
        raise StorageError(f"{release_root}: no release yet ({LATEST} missing)")
    uri, local, store = pointer["uri"], Path(local), open_store(pointer["uri"])
    raw = store.read_bytes(MANIFEST_NAME)
    if raw is None:
        raise StorageError(f"{uri}: no {MANIFEST_NAME}; the release is incomplete")
    manifest = parse_manifest(raw, _join(uri, MANIFEST_NAME))
    entry = next((f for f in manifest["files"] if f["path"] == relative), None)
    if entry is None:
        raise StorageError(f"{uri}: the release has no {relative}")
    store.download_file(relative, local)
    if local.stat().st_size != entry["size"] or sha256_file(local) != entry["sha256"]:
        local.unlink()
        raise StorageError(f"{_join(uri, relative)}: checksum mismatch with the release manifest")
    return pointer


def warm_start(release_root: str, dest: str | Path) -> str | None:
    """The latest release's unpruned model (the graph before pruning: what a scheduled run trains
    from, so it does not prune an already pruned graph again) downloaded to ``dest``; its release
    id, or None when nothing was released yet."""
    if read_latest(release_root) is None:
        log.info("warm start: no release under %s yet; training from the spec", release_root)
        return None
    pointer = fetch_latest_file(release_root, RELEASE_UNPRUNED, dest)
    log.info("warm start from release %s (AP %s)", pointer["release"], pointer["metrics"].get("AP"))
    return pointer["release"]


# ---- what makes a release deployable: triton/, deepstream/, kserve/, check_runtime.py -----------

TRITON_DIR, DEEPSTREAM_DIR, KSERVE_FILE, CHECK_SCRIPT = "triton", "deepstream", "kserve/inferenceservice.yaml", \
    "check_runtime.py"
ENGINES_DIR = "engines"
PLAIN_ONNX_TARGET = "onnx"  # the name of the plain ONNX models (Triton bpnet_onnx, deepstream/onnx/)


NOT_SERVABLE = ("no Triton/DeepStream/KServe files: no engine was built and release.plain_onnx is false "
                "(build engines, or allow the plain ONNX CPU model)")


@dataclass(frozen=True)
class EngineBuild:
    """One built engine: its file and what it was built for and with (``<target>.engine.json``)."""

    target: str
    precision: str
    max_batch_size: int
    path: Path
    platform: dict[str, Any]
    serves: Server = "triton"

    @classmethod
    def from_file(cls, engine: Path) -> EngineBuild:
        info_path = engine_record(engine)
        try:
            info = json.loads(info_path.read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{engine}: no readable build record {info_path} ({exc}); an engine without its "
                                "TensorRT/CUDA/JetPack versions cannot be released: build it with `bpnet "
                                "build_engine`, which writes the record beside the engine") from None
        # records written before engines said what serves them were all built for Triton
        return cls(info["target"], info["precision"], int(info["max_batch_size"]), engine, info["platform"],
                   info.get("serves", "triton"))


@dataclass(frozen=True)
class ServedModels:
    """What a release serves: the standard export for Triton, the SDK-compatible one for DeepStream
    (decrypted ONNX bytes), and the calibration cache INT8 DeepStream engines read (release path)."""

    onnx: bytes
    sdk_onnx: bytes
    sdk_calibration_cache: str | None
    skeleton: Skeleton  # recorded in the exported model: the served joints and limbs


def _write_triton(release: Path, release_uri: str, release_id: str, models: ServedModels,
                  engines: list[EngineBuild], params: DecodeParams, norm: NormalizationParams,
                  options: ReleaseServing) -> dict[str, list[str]]:
    """``triton/`` (a network model per Triton engine, the plain ONNX if allowed, the decoder and
    ensembles) and ``kserve/`` serving it; returns the served model names."""
    import yaml

    from bpnet.deploy import kserve, triton
    from bpnet.model.exported import HEAT_NAME, PAF_NAME

    networks = [triton.Network(f"bpnet_{e.target.replace('-', '_')}", "tensorrt_plan", e.path, e.max_batch_size)
                for e in engines]
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        onnx_path.write_bytes(models.onnx)
        if options.plain_onnx:
            networks.append(triton.Network(f"bpnet_{PLAIN_ONNX_TARGET}", "onnxruntime_onnx", onnx_path,
                                           options.onnx_max_batch_size))
        ensembles = triton.build_repository(release / TRITON_DIR, models.onnx, networks, params, norm.image_scale,
                                            norm.image_offset, options.max_people, HEAT_NAME, PAF_NAME,
                                            models.skeleton)
    service = kserve.inference_service(
        name=options.name, storage_uri=_join(release_uri, TRITON_DIR), gpus=options.gpus, cpu=options.cpu,
        memory=options.memory, node_selector=options.pool.node_selector,
        tolerations=[t.model_dump() for t in options.pool.tolerations], namespace=options.namespace,
        service_account=options.service_account, runtime=options.runtime, release_id=release_id,
        accelerator=options.accelerator_type)
    (release / KSERVE_FILE).parent.mkdir(parents=True, exist_ok=True)
    (release / KSERVE_FILE).write_text(yaml.safe_dump(service, sort_keys=False))
    return {"ensembles": ensembles, "networks": [n.name for n in networks]}


def _write_deepstream(release: Path, models: ServedModels, engines: list[EngineBuild], params: DecodeParams,
                      norm: NormalizationParams, options: ReleaseServing) -> list[str]:
    """``deepstream/<target>/`` for each DeepStream engine (``../../engines/<target>.engine``) and,
    if allowed, ``deepstream/onnx/`` with the plain SDK-compatible ONNX; returns the targets."""
    from bpnet.deploy import deepstream, triton
    from bpnet.model.exported import HEAT_NAME, PAF_NAME

    height, width = triton.network_io(models.sdk_onnx).inputs[0].dims[:2]
    variants = [(e.target, e.precision, e.max_batch_size, f"../../{ENGINES_DIR}/{e.path.name}", None)
                for e in engines]
    if options.plain_onnx:
        (release / DEEPSTREAM_DIR / PLAIN_ONNX_TARGET).mkdir(parents=True, exist_ok=True)
        (release / DEEPSTREAM_DIR / PLAIN_ONNX_TARGET / "model.onnx").write_bytes(models.sdk_onnx)
        variants.append((PLAIN_ONNX_TARGET, "fp32", options.onnx_max_batch_size, None, "model.onnx"))
    for target, precision, batch, engine_file, onnx_file in variants:
        folder = release / DEEPSTREAM_DIR / target
        folder.mkdir(parents=True, exist_ok=True)
        calib = f"../../{models.sdk_calibration_cache}" if precision == "int8" else None
        (folder / "pgie_config.txt").write_text(deepstream.pgie_config(
            model_engine_file=engine_file, onnx_file=onnx_file, precision=precision, batch_size=batch,
            input_hw=(height, width), output_names=[PAF_NAME, HEAT_NAME], image_scale=norm.image_scale,
            image_offset=norm.image_offset, int8_calib_file=calib))
        (folder / "bodypose2d_model_config.txt").write_text(
            deepstream.postprocess_config(params, models.skeleton, batch, feat_upsampling=4))
    targets = [v[0] for v in variants]
    (release / DEEPSTREAM_DIR / "README.md").write_text(deepstream.readme(targets))
    return targets


def write_serving(release: Path, release_uri: str, release_id: str, models: ServedModels,
                  engines: list[EngineBuild], inference: InferenceSpec, norm: NormalizationParams,
                  options: ReleaseServing) -> dict[str, Any]:
    """Write ``triton/`` and ``kserve/`` (when an engine serves Triton or the plain ONNX is allowed),
    ``deepstream/`` (when an engine serves DeepStream or the plain ONNX is allowed) and
    ``check_runtime.py`` into the release folder; returns what the manifest records (what is
    served where, engine platforms)."""
    import inspect

    from bpnet.deploy import platform as engine_platform
    from bpnet.infer.predict import decode_params

    (release / CHECK_SCRIPT).write_text(inspect.getsource(engine_platform))
    skeleton = {"name": models.skeleton.name, "joints": list(models.skeleton.joints),
                "limbs": [list(p) for p in models.skeleton.limb_names()]}
    if not engines and not options.plain_onnx:
        log.warning("release %s has nothing to serve: %s", release_id, NOT_SERVABLE)
        return {"served": {"ensembles": [], "networks": [], "deepstream": [], "note": NOT_SERVABLE}, "engines": {},
                "skeleton": skeleton}
    params = decode_params(inference)
    for_triton = [e for e in engines if e.serves == "triton"]
    for_deepstream = [e for e in engines if e.serves == "deepstream"]
    served: dict[str, Any] = {"ensembles": [], "networks": [], "deepstream": []}
    if for_triton or options.plain_onnx:
        served.update(_write_triton(release, release_uri, release_id, models, for_triton, params, norm, options))
    if for_deepstream or options.plain_onnx:
        served["deepstream"] = _write_deepstream(release, models, for_deepstream, params, norm, options)
    return {"served": served, "engines": {e.target: {"precision": e.precision, "max_batch_size": e.max_batch_size,
                                                     "serves": e.serves, **e.platform} for e in engines},
            "skeleton": skeleton}


# ---- the pipeline's release: gates, model card and assembly (bpnet.steps.publish calls these) ----

RETRAINED = "retrained"
"""The evaluation the release is about: its metrics are ``latest``'s, the promotion rule reads its
AP. A release takes the evaluations keyed by label (the pipeline's are declared in
``pipelines.outputs``) and records every one of them."""
RELEASE_MODEL = f"model/{MODEL_FILE}"
RELEASE_UNPRUNED = f"model/unpruned/{MODEL_FILE}"  # what warm starts train from (the graph before pruning)
RELEASE_INT8 = "onnx/bpnet_model.int8.etlt"
RELEASE_SDK_CACHE = f"calibration/{SDK_CALIBRATION_CACHE}"  # what INT8 DeepStream engines read
INT8_FILES = (RELEASE_INT8, f"calibration/{CALIBRATION_CACHE}", RELEASE_SDK_CACHE,
              f"calibration/{CALIBRATION_TENSORFILE}")
PROMOTE = "promote"
RELEASE_INT8_VERDICT = "release int8"


def promotion_gate(ap: float, min_ap: float, release_root: str) -> str:
    """"promote" if ``ap`` reaches ``min_ap`` and the latest release's AP, else "hold: <why>"."""
    promote, reason = promotion_decision(ap, min_ap, read_latest(release_root))
    log.info("promotion gate: %s", reason)
    return PROMOTE if promote else f"hold: {reason}"


def int8_gate(fp32_ap: float, int8_ap: float, max_drop: float, gpu_targets: list[dict], jetson_targets: list[dict],
              chosen: list[str]) -> tuple[str, list[dict], list[dict]]:
    """("release int8" | "hold: <why>", the GPU and Jetson engine targets to build): of the
    targets, those named in ``chosen``, INT8 ones dropped unless INT8 AP >= fp32 AP - ``max_drop``."""
    ok, why = int8_decision(fp32_ap, int8_ap, max_drop)
    log.info("INT8 gate: %s", why)
    keep = [[t for t in targets if t["name"] in chosen and (ok or t["precision"] != "int8")]
            for targets in (gpu_targets, jetson_targets)]
    return (RELEASE_INT8_VERDICT if ok else f"hold: {why}", *keep)


def model_card(release_id: str, data: dict[str, Any], settings: dict[str, Any], evaluations: dict[str, dict],
               sizes: dict[str, Any], int8_note: str, deploy: dict[str, Any]) -> str:
    """MODEL_CARD.md of a release: data, settings, metrics per model, INT8 verdict, engines, serving."""
    lines = [f"# BodyPoseNet release {release_id}", "", "## Data", ""]
    lines += [f"- {k}: {v}" for k, v in data.items()]
    lines += ["", "## Settings", ""] + [f"- {k}: `{json.dumps(v)}`" for k, v in settings.items()]
    skeleton = deploy.get("skeleton") or {"name": "person", "joints": [], "limbs": []}
    lines += ["", "## Skeleton", "", f"- {skeleton['name']}: {len(skeleton['joints'])} joints (heatmap channels, "
              f"+1 background), {len(skeleton['limbs'])} limbs (PAF channel pairs)",
              f"- joints: {', '.join(skeleton['joints'])}"]
    lines += ["", f"## Metrics (COCO keypoints, {skeleton['name']}, val split)", "",
              "| model | AP | AP50 | AP75 | APm | APl | AR |", "|---|---|---|---|---|---|---|"]
    for name, m in evaluations.items():
        lines.append(f"| {name} | " + " | ".join(f"{m.get(k, float('nan')):.4f}" for k in
                                                 ("AP", "AP50", "AP75", "AP_medium", "AP_large", "AR")) + " |")
    lines += ["", "## INT8", "", int8_note, "", "## Engines", ""]
    engines = deploy["engines"]
    if engines:
        lines += ["| target | precision | max batch | TensorRT | CUDA | JetPack (L4T) | arch | built on | serves |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {t} | {e['precision']} | {e['max_batch_size']} | {e.get('tensorrt')} | {e.get('cuda')} | "
                  f"{e.get('jetpack')} ({e.get('l4t')}) | {e.get('arch')} | {e.get('node')} | {e['serves']} |"
                  for t, e in sorted(engines.items())]
        lines += ["", "An engine runs only with the TensorRT (and JetPack) version above: "
                  "`python3 check_runtime.py <release> [target]` on the target refuses a mismatch."]
    else:
        lines.append("none built (engines.enabled is false, or no TensorRT where this ran)")
    served = deploy["served"]
    lines += ["", "## Serving", ""]
    if served.get("note"):
        lines.append(f"- not servable as released: {served['note']}")
    else:
        if served["networks"]:
            lines += [f"- Triton ensembles (image in, people out): {', '.join(served['ensembles'])}",
                      f"- Triton network models: {', '.join(served['networks'])}",
                      "- KServe: kserve/inferenceservice.yaml (the Triton repository)"]
        if served["deepstream"]:
            lines.append(f"- DeepStream (SDK-compatible model): {', '.join(served['deepstream'])}; "
                         "deepstream/README.md")
    lines += ["", "## Sizes", ""] + [f"- {k}: {v}" for k, v in sizes.items()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ReleaseInputs:
    """The folders a release is assembled from (the pipeline's Model artifacts)."""

    trained: Path
    retrained: Path
    exported: Path
    int8: Path
    engines: tuple[Path, ...] = ()


def release_files(inputs: ReleaseInputs, int8_ok: bool) -> tuple[dict[str, Path], list[EngineBuild]]:
    """Release path -> source file (INT8 files only if ``int8_ok``), and the engines released."""
    retrained, exported, int8 = inputs.retrained, inputs.exported, inputs.int8
    files = {RELEASE_MODEL: retrained / MODEL_FILE, RELEASE_UNPRUNED: inputs.trained / MODEL_FILE,
             f"model/{TRAIN_SPEC_FILE}": retrained / TRAIN_SPEC_FILE,
             f"model/{POSE_CONFIG_FILE}": retrained / POSE_CONFIG_FILE,
             f"onnx/{EXPORTED_FILE}": exported / EXPORTED_FILE, RELEASE_INT8: int8 / EXPORTED_FILE,
             f"onnx/{SDK_EXPORTED_FILE}": exported / SDK_EXPORTED_FILE,
             f"onnx/{EXPORT_SETTINGS_FILE}": exported / EXPORT_SETTINGS_FILE,
             f"calibration/{CALIBRATION_CACHE}": int8 / CALIBRATION_CACHE,
             RELEASE_SDK_CACHE: int8 / SDK_CALIBRATION_CACHE,
             f"calibration/{CALIBRATION_TENSORFILE}": int8 / CALIBRATION_TENSORFILE}
    if not int8_ok:
        files = {rel: src for rel, src in files.items() if rel not in INT8_FILES}
    engines = [EngineBuild.from_file(e) for d in inputs.engines for e in sorted(Path(d).glob(f"*{ENGINE_SUFFIX}"))]
    engines = [e for e in engines if int8_ok or e.precision != "int8"]
    files.update({f"{ENGINES_DIR}/{engine.path.name}": engine.path for engine in engines})
    missing = sorted(rel for rel, src in files.items() if not src.is_file() and rel != f"model/{POSE_CONFIG_FILE}")
    if missing:
        raise ArtifactError(f"the release would be incomplete: missing {missing}")
    return files, engines


def assemble_and_publish(release_root: str, inputs: ReleaseInputs, evaluations: dict[str, dict],
                         data: dict[str, Any], settings: dict[str, Any], decoder: InferenceSpec,
                         serving: ReleaseServing, int8_verdict: str = RELEASE_INT8_VERDICT, min_ap: float = 0.0,
                         key: str | None = None) -> dict[str, Any]:
    """Assemble the release folder (models, calibration, metrics, resolved specs, serving configs,
    model card) and publish it; ``latest`` moves only once the release is complete, and only if
    the promotion rule still holds then. On an INT8 hold no INT8 file is released."""
    import hashlib
    import shutil

    import yaml

    from bpnet.model.exported import read_exported

    int8_ok = not int8_verdict.startswith("hold")
    files, engines = release_files(inputs, int8_ok)
    onnx, info = read_exported(inputs.exported / EXPORTED_FILE, key)
    models = ServedModels(onnx, read_exported(inputs.exported / SDK_EXPORTED_FILE, key)[0],
                          RELEASE_SDK_CACHE if int8_ok else None, info.skeleton)
    train_spec = yaml.safe_load((inputs.retrained / TRAIN_SPEC_FILE).read_text()) or {}
    norm = NormalizationParams.model_validate((train_spec.get("dataloader") or {}).get("normalization_params") or {})
    release_id = new_release_id(hashlib.sha256((inputs.retrained / MODEL_FILE).read_bytes()).hexdigest())
    int8_note = int8_verdict if not int8_ok else f"released ({int8_verdict})"
    with tempfile.TemporaryDirectory(prefix="bpnet-release-") as work:
        root = Path(work) / release_id
        for relative, src in files.items():
            if src.is_file():
                (root / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, root / relative)
        deploy = write_serving(root, _join(release_root, release_id), release_id, models, engines, decoder, norm,
                               serving)
        atomic_write_text(root / METRICS_FILE, json.dumps(evaluations, indent=2) + "\n")
        sizes = {"parameters": evaluations.get(RETRAINED, {}).get("parameters", "-"),
                 **{f"{rel} bytes": (root / rel).stat().st_size for rel in sorted(files) if (root / rel).is_file()}}
        atomic_write_text(root / "MODEL_CARD.md", model_card(release_id, data, settings, evaluations, sizes,
                                                             int8_note, deploy))
        return publish_release(root, release_root, release_id, evaluations.get(RETRAINED, {}), min_ap,
                               metadata={"evaluations": evaluations, "int8": int8_note, **deploy})
