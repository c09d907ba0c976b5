"""What can be checked of the container images without a Docker engine: pinned bases, the pinned
requirements installed, the package and its entry point inside, non-root, no secrets, platforms."""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.conftest import REPO

IMAGES = {"gpu": "linux/amd64", "jetson": "linux/arm64"}


def dockerfile(name: str) -> str:
    return (REPO / "images" / name / "Dockerfile").read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


@pytest.mark.parametrize("name", IMAGES)
def test_base_images_are_pinned_tags(name):
    steps = instructions(dockerfile(name))
    args = dict(a.split("=", 1) for i, a in steps if i == "ARG" and "=" in a)
    for _, base in [s for s in steps if s[0] == "FROM"]:
        image = base.split()[0]
        image = args.get(image[2:-1], image) if image.startswith("${") else image
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d", tag), f"{name}: unpinned base {image}"


@pytest.mark.parametrize("name", IMAGES)
def test_installs_pinned_requirements_and_the_package_with_its_entry_point(name):
    text = dockerfile(name)
    steps = instructions(text)
    copies = " ".join(a for i, a in steps if i == "COPY")
    assert "requirements.txt" in copies
    for package in ("bpnet", "components", "pipelines"):
        assert f"COPY {package} /src/{package}" in text  # components run from the image (lightweight, no pip)
    runs = " ".join(a for i, a in steps if i == "RUN")
    assert "/tmp/requirements.txt" in runs and "pip install" in runs
    assert "bpnet --version" in runs  # the console script exists in the built image
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["bpnet"] == "bpnet.cli:main"
    extra = REPO / "images" / name / f"requirements-{name}.txt"
    pins = [line for line in extra.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert pins and all("==" in line for line in pins), f"{extra}: every requirement pinned"


@pytest.mark.parametrize("name", IMAGES)
def test_runs_as_non_root_and_holds_no_secret(name):
    steps = instructions(dockerfile(name))
    users = [a for i, a in steps if i == "USER"]
    assert users and users[-1].isdigit() and users[-1] != "0"  # numeric: kubelet checks runAsNonRoot by uid
    for instruction, arguments in steps:
        if instruction in ("ENV", "ARG"):
            assert not re.search(r"(KEY|SECRET|TOKEN|PASSWORD)\s*=", arguments, re.I), arguments


def test_gpu_image_python_matches_the_package_and_swaps_in_cuda_tensorflow():
    text = dockerfile("gpu")
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11,<3.12" and "python:3.11." in text
    gpu = (REPO / "images" / "gpu" / "requirements-gpu.txt").read_text()
    assert "tensorflow[and-cuda]==2.21.0" in gpu and "tensorrt-cu12==" in gpu
    assert "tensorflow_cpu==2.21.0" in (REPO / "requirements.txt").read_text()  # same TF release as tested
    assert "tensorflow[-_]cpu" in text  # removed from the freeze before the CUDA build is installed


def test_make_images_builds_each_image_for_its_platform_and_pushes_to_the_registry_variable():
    makefile = (REPO / "Makefile").read_text()
    for name, platform in IMAGES.items():
        assert re.search(rf"docker buildx build --platform {platform} -f images/{name}/Dockerfile "
                         rf"-t \$\(REGISTRY\)/bpnet-{name}:\$\(TAG\) --push", makefile), name
    assert "REGISTRY ?=" in makefile and "git rev-parse --short HEAD" in makefile  # a new tag per commit


def test_docker_context_leaves_out_local_state():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".git", "data", "runs", "build"} <= set(ignored)
