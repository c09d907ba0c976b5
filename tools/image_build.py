"""Build a step image on this machine: ``make image-cpu`` (``bpnet-cpu:local``), ``make image-gpu``.

The engine is podman (Debian's package; ``images/podman-setup.sh`` installs and configures it) or,
where there is one, a Docker engine. The build needs no network: the base image is given
(``--base``, e.g. a registry's ``python:3.11-slim-bookworm``) or made with debootstrap
(``images/base-image.sh``), and every wheel comes from a wheelhouse made here from the flavour's
lock (``pip wheel --require-hashes``: the lock's hashes are checked as the files arrive; pure-Python
sdists such as kfp's are built into wheels). The wheelhouse is remade only when the lock changes,
and the project's wheel is built with the last commit's time as its timestamps, so a rebuild of an
unchanged tree reuses every layer. Prints the build time and the image size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE = ROOT / "build" / "wheelhouse"
DOCKERFILE = ROOT / "images" / "x86_64" / "Dockerfile"
DEBOOTSTRAP_BASE = "bpnet-base:bookworm"
FLAVOURS = ("cpu", "gpu")
TENSORRT_PINS = ROOT / "requirements" / "tensorrt.txt"
NVIDIA_INDEX = "https://pypi.nvidia.com"
DEV_TOOLS = ("pytest", "moto", "hypothesis", "ruff", "uv", "docker", "tritonclient")  # never in an image
log = logging.getLogger("image_build")


@dataclass(frozen=True)
class Built:
    tag: str
    seconds: float
    size_bytes: int

    def line(self) -> str:
        return f"{self.tag}: built in {self.seconds:.0f} s, {self.size_bytes / 1e9:.2f} GB"


def engine() -> str:
    """``podman`` when installed (what this project sets up), else ``docker`` if its engine answers."""
    if shutil.which("podman"):
        return "podman"
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return "docker"
    raise SystemExit("error: no container engine: run images/podman-setup.sh (installs podman) or start Docker")


def _lock_files(flavour: str) -> list[Path]:
    """What the flavour's wheelhouse is made from: its lock (and, for gpu, TensorRT's pins)."""
    return [ROOT / "requirements" / f"{flavour}.txt", *([TENSORRT_PINS] if flavour == "gpu" else [])]


def _lock_digest(flavour: str) -> str:
    return hashlib.sha256(b"".join(path.read_bytes() for path in _lock_files(flavour))).hexdigest()


def pins_without_hashes(lock_text: str) -> str:
    """The lock's ``name==version`` lines alone: the image installs the wheelhouse's files, whose
    hashes pip already checked while making it (a wheel built from an sdist has another hash)."""
    lines = []
    for line in lock_text.splitlines():
        stripped = line.strip().rstrip("\\").strip()
        if stripped and not stripped.startswith(("#", "--hash")):
            lines.append(stripped)
    return "\n".join(lines) + "\n"


def wheelhouse(flavour: str, python: Path) -> Path:
    """``build/wheelhouse/<flavour>/``: every wheel of ``requirements/<flavour>.txt`` and a
    hash-free ``requirements.txt`` of its pins; remade only when the lock changed."""
    lock = _lock_files(flavour)[0]
    out = WHEELHOUSE / flavour
    stamp = out / ".lock-sha256"
    if stamp.exists() and stamp.read_text() == _lock_digest(flavour):
        log.info("wheelhouse %s is current", out.relative_to(ROOT))
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log.info("making wheelhouse %s from %s", out.relative_to(ROOT), lock.relative_to(ROOT))
    pip_wheel = [str(python), "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
                 "-w", str(tmp)]
    subprocess.run([*pip_wheel, "--require-hashes", "-r", str(lock)], check=True)
    pins = pins_without_hashes(lock.read_text())
    if flavour == "gpu":  # TensorRT's sdists fetch their wheels from NVIDIA's index (requirements/tensorrt.txt)
        subprocess.run([*pip_wheel, "--extra-index-url", NVIDIA_INDEX, "-r", str(TENSORRT_PINS)], check=True)
        pins += pins_without_hashes(TENSORRT_PINS.read_text())
    (tmp / "requirements.txt").write_text(pins)
    (tmp / ".lock-sha256").write_text(_lock_digest(flavour))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def project_wheel(python: Path) -> Path:
    """``build/wheelhouse/bpnet/``: the project's wheel alone, timestamped with the last commit."""
    out = WHEELHOUSE / "bpnet"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    commit_time = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.strip()
    env = {**os.environ, "SOURCE_DATE_EPOCH": commit_time or "315532800"}
    subprocess.run([str(python), "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(ROOT)], check=True, env=env)
    shutil.rmtree(ROOT / "build" / "lib", ignore_errors=True)  # setuptools' scratch copy
    return out


def base_image(requested: str | None, tool: str) -> str:
    if requested:
        return requested
    if tool != "podman":
        return "python:3.11-slim-bookworm"  # a Docker engine is assumed to reach its registry
    subprocess.run(["bash", str(ROOT / "images" / "base-image.sh"), DEBOOTSTRAP_BASE], check=True)
    return DEBOOTSTRAP_BASE


def image_size(tool: str, tag: str) -> int:
    out = subprocess.run([tool, "image", "inspect", tag, "--format", "{{.Size}}"], capture_output=True,
                         text=True, check=True).stdout
    return int(out.strip())


def build(flavour: str, tag: str, base: str | None = None, python: Path = Path(sys.executable),
          no_cache: bool = False) -> Built:
    """Build ``tag`` from the x86_64 Dockerfile for ``flavour`` (``no_cache``: rebuild every layer);
    the time counts everything from the base image on (made, with the wheelhouse, when absent)."""
    tool = engine()
    start = time.perf_counter()
    base = base_image(base, tool)
    wheelhouse(flavour, python)
    project_wheel(python)
    log.info("building %s (FLAVOUR=%s, BASE_IMAGE=%s) with %s", tag, flavour, base, tool)
    subprocess.run([tool, "build", "--network", "none", *(["--no-cache"] if no_cache else []), "-f", str(DOCKERFILE),
                    "--build-arg", f"BASE_IMAGE={base}", "--build-arg", f"FLAVOUR={flavour}", "-t", tag, str(ROOT)],
                   check=True)
    return Built(tag, time.perf_counter() - start, image_size(tool, tag))


def installed_packages(tag: str) -> dict[str, str]:
    """``{name: version}`` of the Python distributions in the image's venv (``pip list``), names
    normalised as PEP 503 does (``tensorflow_cpu`` is ``tensorflow-cpu``)."""
    out = subprocess.run([engine(), "run", "--rm", "--network", "none", tag, "python", "-m", "pip", "list",
                          "--format", "json", "--disable-pip-version-check"],
                         capture_output=True, text=True, check=True).stdout
    return {re.sub(r"[-_.]+", "-", p["name"]).lower(): p["version"] for p in json.loads(out)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flavour", choices=FLAVOURS, default="cpu")
    parser.add_argument("--tag", help="default: bpnet-<flavour>:local")
    parser.add_argument("--base", default=os.environ.get("BASE_IMAGE") or None,
                        help="base image (Debian bookworm with python3 and python3-venv); default: "
                             f"debootstrapped {DEBOOTSTRAP_BASE} with podman, python:3.11-slim-bookworm with docker")
    parser.add_argument("--wheelhouse_only", action="store_true",
                        help="only make build/wheelhouse/ (for a build elsewhere, e.g. docker buildx)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.wheelhouse_only:
        wheelhouse(args.flavour, Path(sys.executable))
        project_wheel(Path(sys.executable))
        return 0
    built = build(args.flavour, args.tag or f"bpnet-{args.flavour}:local", args.base)
    print(built.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
