"""Issue 26, section 3: each step moves only what it needs. Calibration gets a small artifact of
the images it reads; a training worker fetches its own record shards and their images from the
train artifact's object-store URI (a real S3-protocol server: moto on 127.0.0.1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bpnet.artifacts import ArtifactError
from bpnet.deploy.calibration import calibration_candidates
from bpnet.errors import DataError
from bpnet.layout import CALIBRATION_IMAGES_DIR
from bpnet.storage import S3Store, open_store
from components import runtime

CAL = {"cal_batches": 2, "cal_batch_size": 3}  # 6 images


@pytest.fixture
def s3(moto_server, monkeypatch) -> str:
    """A bucket on the moto server, the MinIO settings in the environment as a step's pod has them."""
    for name, value in {"BPNET_S3_ENDPOINT": f"http://{moto_server.endpoint}", "BPNET_S3_ACCESS_KEY": "testing",
                        "BPNET_S3_SECRET_KEY": "testing", "BPNET_MODEL_KEY": "tiny"}.items():
        monkeypatch.setenv(name, value)
    S3Store("s3://data").client.make_bucket("data")
    return "s3://data"


@pytest.fixture
def downloads(monkeypatch) -> list[str]:
    """Every object the S3 client downloads, by key."""
    seen: list[str] = []
    original = S3Store.download_file

    def counted(self: S3Store, relative: str, local: Path) -> None:
        seen.append(self.key(relative))
        original(self, relative, local)

    monkeypatch.setattr(S3Store, "download_file", counted)
    return seen


def test_calibration_artifact_holds_exactly_the_images_calibration_takes(s3, synth_dir, tmp_path, downloads):
    raw = tmp_path / "raw"
    shutil.copytree(synth_dir, raw)
    first = calibration_candidates(p.name for p in (raw / "train2017").iterdir())[0]
    (raw / "train2017" / first).write_bytes(b"not a jpeg")  # skipped, as calibration skips it
    open_store(f"{s3}/raw").upload_tree(raw)
    downloads.clear()

    figures = runtime.calibration_data(f"{s3}/raw", (raw / "coco_spec.json").read_text(), json.dumps(CAL),
                                       str(tmp_path / "cal"))

    names = calibration_candidates(p.name for p in (raw / "train2017").iterdir())
    expected = names[1:7]  # the first six readable ones, by name
    assert sorted(p.name for p in (tmp_path / "cal" / CALIBRATION_IMAGES_DIR).iterdir()) == expected
    assert downloads == [f"raw/train2017/{n}" for n in names[:7]]  # nothing else was fetched
    assert figures["images"] == 6 and len(names) > 7
    manifest = json.loads((tmp_path / "cal" / "MANIFEST.json").read_text())
    assert [e["path"] for e in manifest["files"]] == [f"{CALIBRATION_IMAGES_DIR}/{n}" for n in expected]


def test_too_few_calibration_images_is_a_clear_error(s3, synth_dir, tmp_path):
    open_store(f"{s3}/raw").upload_tree(synth_dir)
    settings = json.dumps({"cal_batches": 100, "cal_batch_size": 2})
    with pytest.raises(DataError, match=r"raw/train2017: 24 usable .*cal_batches x cal_batch_size = 200 are needed"):
        runtime.calibration_data(f"{s3}/raw", (synth_dir / "coco_spec.json").read_text(), settings,
                                 str(tmp_path / "cal"))
    assert not (tmp_path / "cal" / "MANIFEST.json").exists()


def test_calibrate_works_from_the_calibration_artifact(tiny_model, synth_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("BPNET_MODEL_KEY", "tiny")
    settings = json.dumps({"input_shape": [64, 96], **CAL})
    runtime.calibration_data(str(synth_dir), (synth_dir / "coco_spec.json").read_text(), settings,
                             str(tmp_path / "cal"))
    runtime.export(str(tiny_model[0].parent), settings, str(tmp_path / "exported"))
    figures = runtime.calibrate(str(tmp_path / "exported"), str(tmp_path / "cal"), settings, str(tmp_path / "int8"))
    assert figures["cal_images"] == 6 and (tmp_path / "int8" / "calibration.bin").is_file()

    (tmp_path / "cal" / CALIBRATION_IMAGES_DIR / sorted((tmp_path / "cal" / CALIBRATION_IMAGES_DIR).iterdir())[0]
     .name).write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="checksum mismatch with the manifest"):
        runtime.calibrate(str(tmp_path / "exported"), str(tmp_path / "cal"), settings, str(tmp_path / "int8b"))
