"""What can be checked of the images and their dependencies without building them: the declared
ranges, the locks that pin them (hashes, one version per package, no dev tool in an image), the
Dockerfiles (offline build from the wheelhouse, non-root, no secret, no registry or machine path),
the build context. tests/test_containers.py builds and runs the real image."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO
from tools.image_build import DEV_TOOLS, pins_without_hashes

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
IMAGE_LOCKS = ("cpu", "gpu", "jetson")  # what images install
DOCKERFILES = {"x86_64": "linux/amd64", "jetson": "linux/arm64"}


def lock_pins(name: str) -> dict[str, str]:
    """``{canonical name: version}`` of ``requirements/<name>.txt``."""
    pins = {}
    for line in pins_without_hashes((REPO / "requirements" / f"{name}.txt").read_text()).splitlines():
        requirement = Requirement(line.split(";")[0])
        (spec,) = requirement.specifier
        pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def dockerfile(name: str) -> str:
    return (REPO / "images" / name / "Dockerfile").read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def declared(*extras: str) -> list[Requirement]:
    """The runtime dependencies and those of ``extras``, self-references (``bpnet[ml]``) followed."""
    out, todo, seen = [Requirement(r) for r in PYPROJECT["dependencies"]], list(extras), set()
    while todo:
        extra = todo.pop()
        seen.add(extra)
        for text in PYPROJECT["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if requirement.name == "bpnet":
                todo += [e for e in requirement.extras if e not in seen]
            else:
                out.append(requirement)
    return out


@pytest.mark.parametrize(("lock", "extras"), [("dev", ("dev",)), ("cpu", ("cpu",)), ("gpu", ("cuda",)),
                                              ("jetson", ())])
def test_each_lock_pins_every_declared_dependency_within_its_range(lock, extras):
    pins = lock_pins(lock)
    for requirement in declared(*extras):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"requirements/{lock}.txt lacks {requirement}"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{lock}: {name}=={pins[name]} " \
                                                                             f"is outside {requirement}"


@pytest.mark.parametrize("lock", ["dev", *IMAGE_LOCKS])
def test_every_pin_carries_its_hashes(lock):
    text = (REPO / "requirements" / f"{lock}.txt").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1])  # one block per requirement
    for block in blocks:
        if block.strip() and not block.startswith("#"):
            assert "==" in block.split()[0] and "--hash=sha256:" in block, block.splitlines()[0]


@pytest.mark.parametrize("lock", IMAGE_LOCKS)
def test_no_dev_tool_in_an_image_lock(lock):
    assert not set(lock_pins(lock)) & {canonicalize_name(t) for t in DEV_TOOLS}


def test_the_tested_venv_and_the_x86_images_share_every_version():
    dev = lock_pins("dev")
    for lock in ("cpu", "gpu"):
        differ = {n: (v, dev[n]) for n, v in lock_pins(lock).items() if n in dev and dev[n] != v}
        assert not differ, f"{lock} vs dev: {differ}"
    assert "tensorflow-cpu" in lock_pins("cpu") and "tensorflow" in lock_pins("gpu")
    assert "tensorflow-cpu" not in lock_pins("gpu") and "tensorflow" not in lock_pins("jetson")
    assert lock_pins("gpu")["tensorflow"] == dev["tensorflow-cpu"]  # the release the tests ran


def test_tensorrt_pins_match_the_declared_extra():
    (extra,) = [Requirement(r) for r in PYPROJECT["optional-dependencies"]["tensorrt"]]
    pins = [Requirement(line) for line in pins_without_hashes((REPO / "requirements/tensorrt.txt").read_text())
            .splitlines()]
    versions = {next(iter(p.specifier)).version for p in pins}
    assert extra.name in {p.name for p in pins} and len(versions) == 1
    assert extra.specifier.contains(versions.pop())


def test_pins_without_hashes_keeps_requirements_and_markers_only():
    text = ("# header\nkfp==2.17.0 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n    # via bpnet\n"
            "numpy==2.2.6 ; python_version < '3.11' \\\n    --hash=sha256:cc\n")
    assert pins_without_hashes(text) == "kfp==2.17.0\nnumpy==2.2.6 ; python_version < '3.11'\n"


def test_x86_image_builds_offline_from_the_wheelhouse_for_either_flavour():
    steps = instructions(dockerfile("x86_64"))
    args = [a for i, a in steps if i == "ARG"]
    assert any(a.startswith("BASE_IMAGE=") for a in args) and any(a.startswith("FLAVOUR=") for a in args)
    copies = [a for i, a in steps if i == "COPY"]
    assert {"build/wheelhouse/${FLAVOUR}/ /wheelhouse/", "build/wheelhouse/bpnet/ /wheelhouse-bpnet/"} <= set(copies)
    installs = [a for i, a in steps if i == "RUN" and "pip install" in a]
    assert installs and all("--no-index" in a for a in installs)  # nothing is downloaded in the build
    runs = " ".join(a for i, a in steps if i == "RUN")
    assert "bpnet --version" in runs and "import components.runtime, pipelines.dag" in runs and "pip check" in runs


def test_jetson_image_installs_its_hashed_lock_from_a_pinned_base():
    steps = instructions(dockerfile("jetson"))
    base = dict(a.split("=", 1) for i, a in steps if i == "ARG" and "=" in a)["L4T_IMAGE"]
    assert re.fullmatch(r"[\w./-]+:r\d+(\.\d+)+", base)
    assert "requirements/jetson.txt /tmp/requirements.txt" in [a for i, a in steps if i == "COPY"]
    assert any("--require-hashes -r /tmp/requirements.txt" in a for i, a in steps if i == "RUN")


# A build machine's checkout or home folder (the image's own /home/bpnet is fine).
MACHINE_PATH = re.compile(r"/(?:work|root|Users)/|/home/(?!bpnet\b)")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runs_as_non_root_with_no_secret_registry_or_machine_path(name):
    text = dockerfile(name)
    steps = instructions(text)
    users = [a for i, a in steps if i == "USER"]
    assert users and users[-1] == "1000"  # numeric: kubelet checks runAsNonRoot by uid
    for instruction, arguments in steps:
        if instruction in ("ENV", "ARG"):
            assert not re.search(r"(KEY|SECRET|TOKEN|PASSWORD)\s*=", arguments, re.I), arguments
    body = "\n".join(f"{i} {a}" for i, a in steps)
    assert "example.com" not in body
    assert not MACHINE_PATH.search(body), MACHINE_PATH.search(body)


def test_make_images_builds_each_image_for_its_platform_and_pushes_to_the_registry_variable():
    makefile = (REPO / "Makefile").read_text().replace("\\\n", " ")
    for name, (image, platform) in {"x86_64": ("gpu", "linux/amd64"), "jetson": ("jetson", "linux/arm64")}.items():
        assert re.search(rf"docker buildx build --platform {platform} -f images/{name}/Dockerfile .*"
                         rf"-t \$\(REGISTRY\)/bpnet-{image}:\$\(TAG\) --push", makefile), name
    assert "REGISTRY ?=" in makefile and "git rev-parse --short HEAD" in makefile  # a new tag per commit


def test_build_context_leaves_out_local_state_but_not_the_wheelhouse():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".git", "data", "runs", "build/*", "!build/wheelhouse"} <= set(ignored)
