"""What containers cost on this machine: building the step image and running the DAG in it.

Prints: the cold build time of ``bpnet-cpu:local`` (``--no-cache``: every layer rebuilt from the
base image and the wheelhouse, which are made first if absent and timed apart), the warm build time
(unchanged tree: every layer reused), the image size; then the demo DAG of ``make run`` (the
repository's local run spec and demo data, ``--set`` overrides as given) run once with every step
as a host process and once with every step in a container, each wall time and their ratio.
Needs a container engine (``make container-engine``) and the demo data (``make demo-data``).

    .venv/bin/python benchmarks/containers.py [--set num_epoch=5 ...] [--skip_builds]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.image_build import build, engine  # noqa: E402

IMAGE = "bpnet-cpu:local"
SPEC = ROOT / "specs" / "pipeline" / "local.yaml"


def dag_seconds(overrides: list[str], image: str | None) -> float:
    """Wall time of ``python -m pipelines local`` (host processes, or containers of ``image``)."""
    args = [sys.executable, "-m", "pipelines", "local", "--spec", str(SPEC), "-l", "WARNING"]
    args += [a for o in overrides for a in ("--set", o)] + (["--image", image] if image else [])
    start = time.perf_counter()
    subprocess.run(args, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "BPNET_MODEL_KEY": os.environ.get("BPNET_MODEL_KEY", "bpnet-demo-key")})
    return time.perf_counter() - start


def build_seconds(no_cache: bool) -> tuple[float, int]:
    """(seconds, image size) of one build; ``no_cache`` rebuilds every layer."""
    if no_cache:
        subprocess.run([engine(), "rmi", "-f", IMAGE], capture_output=True)
    built = build("cpu", IMAGE, no_cache=no_cache)
    return built.seconds, built.size_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="NAME=VALUE")
    parser.add_argument("--skip_builds", action="store_true", help="time the DAGs only (image already built)")
    args = parser.parse_args()
    if not args.skip_builds:
        build("cpu", IMAGE)  # base image and wheelhouse in place, so the cold build times the layers alone
        cold, size = build_seconds(no_cache=True)
        warm, _ = build_seconds(no_cache=False)
        print(f"image {IMAGE}: {size / 1e9:.2f} GB; build cold (--no-cache) {cold:.0f} s, warm {warm:.0f} s")
    host = dag_seconds(args.overrides, None)
    containers = dag_seconds(args.overrides, IMAGE)
    print(f"DAG wall time: host processes {host:.0f} s, containers {containers:.0f} s, "
          f"ratio {containers / host:.2f}")


if __name__ == "__main__":
    main()
