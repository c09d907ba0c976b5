"""What an engine was built with (TensorRT, CUDA, L4T/JetPack, CPU architecture, node), and the
check that refuses to deploy it on anything else.

A TensorRT engine runs only with the exact TensorRT version (and, on Jetson, the L4T/JetPack
release) it was built with; a mismatch otherwise shows up as a deserialization crash inside
Triton or DeepStream. The build step (``bpnet.steps.build_engine``) records the platform next to
each engine; the release's ``MANIFEST.json`` and model card carry it, and ``check_runtime.py``
(this file, copied into every release; it needs nothing but Python) compares it with the machine
it runs on:

    python3 check_runtime.py <release folder> [engine target]

exit 0 when every (or the named) engine fits, 1 with one line per mismatch. No bpnet import here,
on purpose: the script must run on a bare Jetson or in a Triton image.
"""

from __future__ import annotations

import json
import os
import platform as _platform
import re
import socket
import subprocess
import sys
from pathlib import Path

NODE_ENV = "NODE_NAME"  # the node an engine is built on (the pipeline sets it to the pod's spec.nodeName)
CHECKED = ("tensorrt", "l4t", "arch")  # must be equal; CUDA/JetPack are reported, TensorRT pins them


def _tensorrt_version() -> str | None:
    try:
        import tensorrt
    except ImportError:
        return None
    return str(tensorrt.__version__)


def _cuda_version() -> str | None:
    if os.environ.get("CUDA_VERSION"):  # set by NVIDIA's CUDA container images
        return os.environ["CUDA_VERSION"]
    try:
        data = json.loads(Path("/usr/local/cuda/version.json").read_text())
        return str(data["cuda"]["version"])
    except (OSError, ValueError, KeyError):
        return None


def _l4t_release() -> str | None:
    """Jetson's L4T release ("35.4.1") from /etc/nv_tegra_release; None off Jetson."""
    try:
        text = Path("/etc/nv_tegra_release").read_text()
    except OSError:
        return None
    match = re.search(r"R(\d+) \(release\), REVISION: ([\d.]+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def _jetpack_version() -> str | None:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def current_platform() -> dict[str, str | None]:
    """This machine's engine-relevant versions; ``BPNET_PLATFORM`` (JSON) overrides fields (tests,
    or a cross-check from a machine where the versions are known). The node is ``$NODE_NAME``
    (``NODE_ENV``), else the hostname (in a pod: the pod's name)."""
    info = {"tensorrt": _tensorrt_version(), "cuda": _cuda_version(), "l4t": _l4t_release(),
            "jetpack": _jetpack_version(), "arch": _platform.machine(),
            "node": os.environ.get(NODE_ENV) or socket.gethostname()}
    info.update(json.loads(os.environ.get("BPNET_PLATFORM", "{}")))
    return info


def mismatches(built: dict[str, str | None], here: dict[str, str | None]) -> list[str]:
    """Why an engine built on ``built`` cannot run ``here`` (empty: it can)."""
    problems = []
    if here.get("tensorrt") is None:
        problems.append(f"TensorRT is not installed here; the engine needs TensorRT {built.get('tensorrt')}")
    for key in CHECKED:
        if here.get(key) is not None and built.get(key) != here.get(key):
            label = {"tensorrt": "TensorRT", "l4t": "L4T (JetPack)", "arch": "CPU architecture"}[key]
            problems.append(f"{label} {here.get(key)} here, the engine was built with {built.get(key)} "
                            f"(CUDA {built.get('cuda')}, JetPack {built.get('jetpack')}, node {built.get('node')})")
    if built.get("l4t") and here.get("l4t") is None:
        problems.append(f"the engine was built on Jetson (L4T {built['l4t']}); this is not a Jetson")
    return problems


def check_release(release: Path, target: str | None = None) -> list[str]:
    manifest = json.loads((release / "MANIFEST.json").read_text())
    engines = manifest.get("metadata", {}).get("engines", {})
    if target is not None and target not in engines:
        return [f"{release}: no engine target '{target}' (has: {', '.join(sorted(engines)) or 'none'})"]
    here = current_platform()
    return [f"{name}: {problem}" for name, built in sorted(engines.items()) if target in (None, name)
            for problem in mismatches(built, here)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or len(args) > 2:
        print("usage: check_runtime.py <release folder> [engine target]", file=sys.stderr)
        return 2
    try:
        problems = check_release(Path(args[0]), args[1] if len(args) > 1 else None)
    except (OSError, ValueError) as exc:
        print(f"check_runtime: {args[0]}: cannot read the release manifest ({exc})", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"refused: {problem}", file=sys.stderr)
    if not problems:
        print("ok: the engines of this release fit this machine")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
