"""The skeleton: joints, limbs, flip pairs, derived joints, OKS sigmas and assembly start joints.

A skeleton is data, read from a pose config (TAO's ``categories`` form or the flat form); no module
names a joint. The default is BodyPoseNet's 18-joint layout (COCO's 17 keypoints plus a neck
derived from the shoulders), shipped as package data (``bpnet/resources/bpnet_18joints.json``, also
``specs/bpnet_18joints.json``). A config's joint order is the heatmap channel order and its limb
order the PAF channel order. Labels, flipping, decoding, drawing, evaluation and deployment derive
everything from the ``Skeleton``; a model file records the one it was trained with.

Pose config fields beyond TAO's (all optional; docs/skeletons.md explains each):

- ``derived_joints``: ``{joint: [a, b]}``, a joint the dataset does not label, the midpoint of two
  that it does (the default's neck);
- ``flip_pairs``: ``[[a, b], ...]`` joints that swap under a mirror; joints whose names differ
  only by a ``left``/``right`` word are paired without being listed;
- ``oks_sigmas``: ``{joint: sigma}`` for COCO keypoint AP (pycocotools' ``kpt_oks_sigmas``), every
  joint but the derived ones;
- ``assembly_start``: joints people are assembled outwards from (default: the best-connected).

A config with exactly the default's joints and limbs (TAO's own file) takes the default's
declarations for the fields it leaves out, so TAO's file keeps working unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from importlib import resources
from pathlib import Path

import numpy as np

from bpnet.errors import DataError


class Visibility(IntEnum):
    """BodyPoseNet's internal visibility categories (datasets map their own flags onto these)."""

    NOT_LABELED = 0
    OCCLUDED = 1
    VISIBLE = 2


VISIBILITY_NAMES: dict[str, Visibility] = {v.name.lower(): v for v in Visibility}

_SIDES = {"left": "right", "right": "left", "l": "r", "r": "l"}


def _mirror_name(name: str) -> str:
    """``left_wrist`` <-> ``right_wrist``, ``eye_l`` <-> ``eye_r``: the side word swapped."""
    words = name.split("_")
    return "_".join(_SIDES.get(w, w) for w in words) if any(w in _SIDES for w in words) else name


class PoseConfigError(DataError, ValueError):
    """A pose config that cannot be read or does not describe a usable skeleton."""


@dataclass(frozen=True)
class DerivedJoint:
    """A joint the dataset does not label: the midpoint of two that it does."""

    name: str
    a: str
    b: str


@dataclass(frozen=True)
class Skeleton:
    """A model skeleton: ordered joints, limbs (pairs of joint indices, 0-based) and what the
    pose config declares about them (see the module docstring)."""

    joints: tuple[str, ...]
    limbs: tuple[tuple[int, int], ...]
    name: str = "person"
    derived: tuple[DerivedJoint, ...] = ()
    flip_pairs: tuple[tuple[int, int], ...] = ()  # declared pairs; name-inferred ones are added by flip_index
    oks_sigmas: tuple[tuple[str, float], ...] = ()
    assembly_start: tuple[int, ...] = ()

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def heat_channels(self) -> int:
        """One heatmap per joint plus the background channel."""
        return self.num_joints + 1

    @property
    def paf_channels(self) -> int:
        """An (x, y) vector field per limb."""
        return 2 * len(self.limbs)

    @property
    def flip_index(self) -> np.ndarray:
        """For a horizontally mirrored image: joint i takes the label of joint flip_index[i]."""
        index = np.arange(self.num_joints, dtype=np.int64)
        for j, name in enumerate(self.joints):
            mirror = _mirror_name(name)
            if mirror != name and mirror in self.joints:
                index[j] = self.joints.index(mirror)
        for a, b in self.flip_pairs:
            index[a], index[b] = b, a
        return index

    @property
    def labeled_joints(self) -> tuple[str, ...]:
        """The joints a dataset labels (all but the derived ones), in model order."""
        derived = {d.name for d in self.derived}
        return tuple(j for j in self.joints if j not in derived)

    def sigmas_for(self, names: Sequence[str]) -> np.ndarray:
        """OKS sigmas of ``names`` (a dataset's keypoints), for pycocotools' ``kpt_oks_sigmas``."""
        sigmas = dict(self.oks_sigmas)
        missing = [n for n in names if n not in sigmas]
        if missing:
            raise PoseConfigError(f"pose config '{self.name}': oks_sigmas has no value for {missing}; declare "
                                  "them (docs/skeletons.md) to evaluate COCO keypoint AP")
        return np.array([sigmas[n] for n in names], np.float64)

    def limb_names(self) -> list[tuple[str, str]]:
        return [(self.joints[a], self.joints[b]) for a, b in self.limbs]

    def to_config(self) -> dict:
        """The flat pose-config JSON form (1-based skeleton, as in the TLT pose config files) with
        every declaration: what a model file records."""
        config: dict = {
            "name": self.name,
            "num_joints": self.num_joints,
            "keypoints": list(self.joints),
            "skeleton": [[a + 1, b + 1] for a, b in self.limbs],
            "skeleton_edge_names": [list(p) for p in self.limb_names()],
            "derived_joints": {d.name: [d.a, d.b] for d in self.derived},
            "flip_pairs": [[self.joints[a], self.joints[b]] for a, b in self.flip_pairs],
            "oks_sigmas": dict(self.oks_sigmas),
            "assembly_start": [self.joints[j] for j in self.assembly_start],
        }
        return config

    def to_json(self) -> str:
        return json.dumps(self.to_config(), sort_keys=True)


def check_skeleton(skeleton: Skeleton, source: str) -> None:
    """Refuse a skeleton the steps cannot use, naming the offending entry."""
    joints = skeleton.joints
    if len(joints) < 2:
        raise PoseConfigError(f"{source}: keypoints: {len(joints)} joint(s); a skeleton needs at least 2")
    seen: dict[str, int] = {}
    for k, name in enumerate(joints):
        if name in seen:
            raise PoseConfigError(f"{source}: keypoints[{k}] '{name}' repeats keypoints[{seen[name]}]")
        seen[name] = k
    if not skeleton.limbs:
        raise PoseConfigError(f"{source}: skeleton: no limbs; joints must be connected by limbs")
    limbs: dict[frozenset, int] = {}
    for k, (a, b) in enumerate(skeleton.limbs):
        if not (0 <= a < len(joints) and 0 <= b < len(joints)) or a == b:
            raise PoseConfigError(f"{source}: skeleton[{k}] = [{a + 1}, {b + 1}] is not a pair of two 1-based "
                                  f"keypoint indices in 1..{len(joints)}")
        pair = frozenset((a, b))
        if pair in limbs:
            raise PoseConfigError(f"{source}: skeleton[{k}] {list(skeleton.limb_names()[k])} repeats "
                                  f"skeleton[{limbs[pair]}]")
        limbs[pair] = k
    reached = _component(len(joints), skeleton.limbs, 0)
    if len(reached) < len(joints):
        apart = [joints[j] for j in range(len(joints)) if j not in reached]
        raise PoseConfigError(f"{source}: skeleton: the limbs leave {apart} disconnected from '{joints[0]}'; "
                              "people are assembled along limbs, so every joint must be reachable")
    for d in skeleton.derived:
        for part in (d.name, d.a, d.b):
            if part not in seen:
                raise PoseConfigError(f"{source}: derived_joints.{d.name}: unknown joint '{part}'")
        derived = {x.name for x in skeleton.derived}
        if {d.a, d.b} & derived or d.a == d.b:
            raise PoseConfigError(f"{source}: derived_joints.{d.name}: [{d.a}, {d.b}] must be two distinct "
                                  "joints the dataset labels (not derived ones)")
    for name, sigma in skeleton.oks_sigmas:
        if name not in seen:
            raise PoseConfigError(f"{source}: oks_sigmas.{name}: unknown joint")
        if not (isinstance(sigma, (int, float)) and 0 < sigma < 10):
            raise PoseConfigError(f"{source}: oks_sigmas.{name}: {sigma!r} is not a positive number")


def _component(count: int, limbs: Sequence[tuple[int, int]], start: int) -> set[int]:
    """The joints reachable from ``start`` along the limbs."""
    neighbours: list[list[int]] = [[] for _ in range(count)]
    for a, b in limbs:
        neighbours[a].append(b)
        neighbours[b].append(a)
    reached, todo = {start}, [start]
    while todo:
        for n in neighbours[todo.pop()]:
            if n not in reached:
                reached.add(n)
                todo.append(n)
    return reached


POSE_CONFIG_RESOURCE = "bpnet_18joints.json"  # package data: bpnet/resources/, the same file as specs/


def _category(data: dict, source: str) -> dict:
    """The skeleton's entry of TAO's ``categories`` form: the only one, or the one named ``person``
    (TAO's dataloader reads that one)."""
    categories = data["categories"] if isinstance(data["categories"], list) else []
    entries = [c for c in categories if isinstance(c, dict)]
    if len(entries) == 1:
        return entries[0]
    people = [c for c in entries if c.get("name") == "person"]
    if not people:
        raise PoseConfigError(f"{source}: categories must hold one entry, or one with name 'person'")
    return people[0]


def _names(value: object, source: str, key: str, joints: dict[str, int]) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise PoseConfigError(f"{source}: {key} must be a list of joint names")
    for n in value:
        if n not in joints:
            raise PoseConfigError(f"{source}: {key}: unknown joint '{n}'")
    return [joints[n] for n in value]


def parse_pose_config(data: object, source: str) -> Skeleton:
    """A skeleton from pose-config JSON data in either accepted form.

    TAO's form (the file the guide's ``pose_config_path`` names) wraps the skeleton in
    ``categories``; the flat form has ``num_joints``/``keypoints``/``skeleton`` at the top level.
    In both, ``skeleton`` is 1-based and its order is the PAF channel order (limb k = channels
    2k, 2k+1); ``skeleton_edge_names``, when present, must name the same joints.
    """
    if not isinstance(data, dict):
        raise PoseConfigError(f"{source}: a pose config must be a JSON object")
    if "categories" in data:
        data = _category(data, source)
    joints = data.get("keypoints")
    if not isinstance(joints, list) or not all(isinstance(j, str) for j in joints):
        raise PoseConfigError(f"{source}: keypoints must be a list of joint names")
    if data.get("num_joints") != len(joints):
        raise PoseConfigError(f"{source}: num_joints {data.get('num_joints')} != {len(joints)} keypoints")
    try:
        limbs = tuple((int(a) - 1, int(b) - 1) for a, b in data.get("skeleton", ()))
    except (TypeError, ValueError) as exc:
        raise PoseConfigError(f"{source}: skeleton must be a list of [a, b] pairs: {exc}") from exc
    bare = Skeleton(joints=tuple(joints), limbs=limbs)
    check_skeleton(bare, source)
    names = data.get("skeleton_edge_names")
    if names is not None:
        expected = [list(p) for p in bare.limb_names()]
        for k, (got, want) in enumerate(zip(names, expected, strict=False)):
            if list(got) != want:
                raise PoseConfigError(f"{source}: skeleton_edge_names[{k}] = {list(got)} but skeleton[{k}] is {want}")
        if len(names) != len(expected):
            raise PoseConfigError(f"{source}: {len(names)} skeleton_edge_names for {len(expected)} skeleton edges")
    if DEFAULT is not None and (bare.joints, bare.limbs) == (DEFAULT.joints, DEFAULT.limbs):
        data = {**DEFAULT.to_config(), **data}  # TAO's file: the default's declarations fill the gaps
    return _declared(data, bare, source)


def _declared(data: dict, bare: Skeleton, source: str) -> Skeleton:
    """``bare`` with the config's optional declarations, each checked."""
    index = {name: k for k, name in enumerate(bare.joints)}
    derived_raw = data.get("derived_joints") or {}
    if not isinstance(derived_raw, dict):
        raise PoseConfigError(f"{source}: derived_joints must map a joint to [a, b]")
    derived = []
    for name, pair in derived_raw.items():
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise PoseConfigError(f"{source}: derived_joints.{name}: must be [a, b], two joint names")
        derived.append(DerivedJoint(name, pair[0], pair[1]))
    pairs = data.get("flip_pairs") or []
    if not isinstance(pairs, list):
        raise PoseConfigError(f"{source}: flip_pairs must be a list of [a, b] joint-name pairs")
    flips = []
    for k, pair in enumerate(pairs):
        a, b = _names(pair, source, f"flip_pairs[{k}]", index) if isinstance(pair, list) and len(pair) == 2 \
            else (None, None)
        if a is None or a == b:
            raise PoseConfigError(f"{source}: flip_pairs[{k}]: must be [a, b], two different joint names")
        flips.append((a, b))
    sigmas = data.get("oks_sigmas") or {}
    if not isinstance(sigmas, dict):
        raise PoseConfigError(f"{source}: oks_sigmas must map a joint name to its sigma")
    start = _names(data.get("assembly_start") or [], source, "assembly_start", index)
    used = [j for pair in flips for j in pair]
    if len(set(used)) != len(used):
        raise PoseConfigError(f"{source}: flip_pairs: a joint appears in more than one pair")
    skeleton = Skeleton(joints=bare.joints, limbs=bare.limbs, name=str(data.get("name", "person")),
                        derived=tuple(derived), flip_pairs=tuple(flips),
                        oks_sigmas=tuple(sorted(sigmas.items())), assembly_start=tuple(start))
    check_skeleton(skeleton, source)
    return skeleton


def _read_json(path: str | Path) -> object:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PoseConfigError(f"{path}: cannot read pose config: {exc}") from exc


DEFAULT: Skeleton | None = None  # set below; parse_pose_config reads it once it exists


def _default_skeleton() -> Skeleton:
    resource = resources.files("bpnet") / "resources" / POSE_CONFIG_RESOURCE
    return parse_pose_config(json.loads(resource.read_text()), f"bpnet/resources/{POSE_CONFIG_RESOURCE}")


# TAO's 18-joint skeleton, joint and limb (= PAF channel) order as in TAO's bpnet_18joints.json, so
# that an exported model is a drop-in for TAO's deployment configs (DeepStream bodypose2d).
BPNET_SKELETON = DEFAULT = _default_skeleton()


def load_pose_config(path: str | Path) -> Skeleton:
    """Load and check a pose config JSON file (TAO's or the flat form)."""
    return parse_pose_config(_read_json(path), str(path))


def skeleton_from_json(text: str, source: str) -> Skeleton:
    """The skeleton a model file or an exported model records (``Skeleton.to_json``)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PoseConfigError(f"{source}: the recorded skeleton is not JSON: {exc}") from exc
    return parse_pose_config(data, source)


def check_dataset_keypoints(dataset_names: Sequence[str], skeleton: Skeleton) -> None:
    """Every joint of the skeleton comes from the dataset, by name or as a derived midpoint."""
    derived = {d.name: d for d in skeleton.derived}
    for name in skeleton.joints:
        needs = [name] if name not in derived else [derived[name].a, derived[name].b]
        missing = [n for n in needs if n not in dataset_names]
        if missing:
            how = f"(derived from {needs}) " if name in derived else ""
            raise PoseConfigError(f"the dataset has no keypoint {missing} for the pose config's joint '{name}' "
                                  f"{how}(dataset keypoints: {list(dataset_names)})")


def dataset_to_model_keypoints(keypoints: np.ndarray, dataset_names: Sequence[str], skeleton: Skeleton) -> np.ndarray:
    """Map (N, K_dataset, 3) keypoints with internal visibility flags to (N, J_model, 3).

    Joints are matched by name. A derived joint is the midpoint of its two sources and is labeled
    only when both are; its flag is the weaker of the two. (The published code derived the neck
    toward (0, 0) when a shoulder was missing; here it is marked not labeled.)
    """
    check_dataset_keypoints(dataset_names, skeleton)
    keypoints = np.asarray(keypoints, dtype=np.float32).reshape(-1, len(dataset_names), 3)
    out = np.zeros((keypoints.shape[0], skeleton.num_joints, 3), dtype=np.float32)
    index = {name: i for i, name in enumerate(dataset_names)}
    derived = {d.name: d for d in skeleton.derived}
    for j, name in enumerate(skeleton.joints):
        if name in derived:
            a, b = (keypoints[:, index[n]] for n in (derived[name].a, derived[name].b))
            both = (a[:, 2] > Visibility.NOT_LABELED) & (b[:, 2] > Visibility.NOT_LABELED)
            out[:, j, :2] = np.where(both[:, None], (a[:, :2] + b[:, :2]) / 2.0, 0.0)
            out[:, j, 2] = np.where(both, np.minimum(a[:, 2], b[:, 2]), Visibility.NOT_LABELED)
        else:
            out[:, j] = keypoints[:, index[name]]
    return out


def model_to_dataset_keypoints(keypoints: np.ndarray, dataset_names: Sequence[str], skeleton: Skeleton) -> np.ndarray:
    """(J_model, 3) -> (K_dataset, 3) by joint name; derived joints are dropped. A dataset keypoint
    the skeleton does not have is a PoseConfigError naming it."""
    index = {name: i for i, name in enumerate(skeleton.joints)}
    missing = [n for n in dataset_names if n not in index]
    if missing:
        raise PoseConfigError(f"the model's skeleton '{skeleton.name}' has no joint {missing} of the dataset's "
                              f"keypoints; it predicts {list(skeleton.joints)}")
    return np.asarray(keypoints)[[index[name] for name in dataset_names]]
