"""``make lock``: the pinned, hashed requirement files in ``requirements/`` from pyproject.toml.

pyproject.toml declares compatible ranges; each lock pins one install exactly, with every
distribution's sha256 (pip's hash-checking mode), for one Python and platform:

- ``dev.txt``: runtime + tensorflow-cpu + the dev tools (tests, linters, local runners); what
  ``make`` installs into ``.venv``.
- ``cpu.txt``: runtime + tensorflow-cpu; the ``bpnet-cpu`` image.
- ``gpu.txt``: runtime + TensorFlow's CUDA build; the ``bpnet-gpu`` image, which adds the pins of
  ``tensorrt.txt`` (written by hand: TensorRT's sdists resolve only where NVIDIA's index answers).
- ``jetson.txt``: the runtime's base (no TensorFlow) for JetPack's Python 3.10 on arm64; the
  ``bpnet-jetson`` engine-build image, whose TensorRT comes from its L4T base.

Re-locking keeps every pin a lock already has (uv prefers the pins of the file it rewrites, and the
image locks are constrained by ``dev.txt``, so one package has one version across them);
``--upgrade`` moves them to the newest versions the ranges allow. uv resolves for a platform other than its
own without downloading wheels, so all four locks are made on any machine.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK_DIR = ROOT / "requirements"
log = logging.getLogger("lock")


@dataclass(frozen=True)
class Lock:
    """One lock file: the extras it installs, for which Python and platform, and what else it is
    constrained by (locks made before it)."""

    name: str
    extras: tuple[str, ...]
    python: str = "3.11"
    platform: str = "x86_64-manylinux_2_28"
    constrained_by: tuple[str, ...] = ()

    @property
    def path(self) -> Path:
        return LOCK_DIR / f"{self.name}.txt"


LOCKS = (  # in order: dev first, since the image locks take its pins as constraints
    Lock("dev", ("dev",)),
    Lock("cpu", ("cpu",), constrained_by=("dev",)),
    Lock("gpu", ("cuda",), constrained_by=("dev",)),  # + requirements/tensorrt.txt (see its header)
    Lock("jetson", (), python="3.10", platform="aarch64-manylinux_2_28"),
)


def runtime_requirements() -> list[str]:
    """pyproject.toml's ``dependencies``: the Jetson lock's input (that image has no TensorFlow, and
    the project's ``requires-python`` names 3.11, so it is compiled from the list, not the project)."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def compile_lock(lock: Lock, upgrade: bool, uv: str) -> None:
    args = [uv, "pip", "compile", "--quiet", "--generate-hashes", "--no-strip-extras",
            "--python-version", lock.python, "--python-platform", lock.platform,
            "--custom-compile-command", "make lock", "--output-file", str(lock.path)]
    if upgrade:
        args.append("--upgrade")
    for name in lock.constrained_by:
        args += ["--constraint", str(LOCK_DIR / f"{name}.txt")]
    stdin = None
    if lock.extras:
        args += ["pyproject.toml", *(f"--extra={extra}" for extra in lock.extras)]
    else:
        args.append("-")
        stdin = "\n".join(runtime_requirements()) + "\n"
    log.info("locking %s (Python %s, %s)", lock.path.relative_to(ROOT), lock.python, lock.platform)
    subprocess.run(args, input=stdin, text=True, check=True, cwd=ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upgrade", action="store_true", help="newest versions the ranges allow")
    parser.add_argument("--only", choices=[lock.name for lock in LOCKS], action="append",
                        help="lock only these (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    uv = str(Path(sys.executable).with_name("uv"))
    LOCK_DIR.mkdir(exist_ok=True)
    for lock in LOCKS:
        if not args.only or lock.name in args.only:
            compile_lock(lock, args.upgrade, uv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
