"""The dataset spec (JSON) read by dataset_convert, train, evaluate and inference.

Fields and defaults follow the guide's "Create a Configuration File for the Dataset Converter".
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from bpnet.specs.base import CrossFieldError, InputDir, PoseConfigFile, SpecModel

if TYPE_CHECKING:
    from bpnet.pose import Skeleton

BpNetVisibility = Literal["visible", "occluded", "not_labeled"]


class DataSplitConfig(SpecModel):
    """Paths of one split, relative to ``root_directory_path``."""

    images_root_dir_path: str
    mask_root_dir_path: str
    annotation_root_dir_path: str


class CategoryConfig(SpecModel):
    """The keypoint convention of the dataset, as in COCO's ``categories`` entries."""

    supercategory: str = "person"
    id: int = 1
    name: str = "person"
    num_joints: int = Field(17, ge=1, le=1000)
    keypoints: list[str] = Field(max_length=1000)
    skeleton: list[tuple[int, int]] = Field(default_factory=list, max_length=10_000)
    skeleton_edge_names: list[tuple[str, str]] | None = Field(None, max_length=10_000)

    @model_validator(mode="after")
    def _consistent(self) -> CategoryConfig:
        if len(self.keypoints) != self.num_joints:
            raise CrossFieldError(f"{len(self.keypoints)} keypoints are named", "num_joints", "keypoints", source=self)
        if len(set(self.keypoints)) != len(self.keypoints):
            raise CrossFieldError("keypoint names must be unique", "keypoints", source=self)
        for a, b in self.skeleton:
            if not (1 <= a <= self.num_joints and 1 <= b <= self.num_joints):
                raise CrossFieldError(f"edge [{a}, {b}] must use 1-based indices in [1, {self.num_joints}]",
                                      "skeleton", "num_joints", source=self)
        if self.skeleton_edge_names is not None:
            named = [(self.keypoints[a - 1], self.keypoints[b - 1]) for a, b in self.skeleton]
            if [tuple(e) for e in self.skeleton_edge_names] != named:
                raise CrossFieldError("must name the skeleton's edges, in the same order",
                                      "skeleton_edge_names", "skeleton", source=self)
        return self


class VisibilityFlagsConfig(SpecModel):
    """Dataset visibility flags (name -> value) and their mapping to BodyPoseNet's categories."""

    value: dict[str, int] = Field(default_factory=lambda: {"visible": 2, "occluded": 1, "not_labeled": 0})
    mapping: dict[str, BpNetVisibility] = Field(
        default_factory=lambda: {"visible": "visible", "occluded": "occluded", "not_labeled": "not_labeled"}
    )

    @model_validator(mode="after")
    def _all_mapped(self) -> VisibilityFlagsConfig:
        unmapped = sorted(set(self.value) - set(self.mapping))
        if unmapped:
            raise CrossFieldError(f"visibility categories {unmapped} have no entry in mapping", "mapping", "value",
                                  source=self)
        unknown = sorted(set(self.mapping) - set(self.value))
        if unknown:
            raise CrossFieldError(f"names categories {unknown} that have no flag value", "mapping", "value",
                                  source=self)
        if len(set(self.value.values())) != len(self.value):
            raise CrossFieldError("visibility flag values must be distinct", "value", source=self)
        return self


class DataFilteringParams(SpecModel):
    """Rules selecting the persons a training sample is centred on, and who is masked out.

    ``center_filter`` (extension) picks the rule set. ``tao`` (default) is TAO's dataset code, so
    a TAO dataset gives the same record counts: at least ``min_acceptable_kpts`` labeled
    keypoints, segmentation ``area`` at least ``min_acceptable_width`` x ``min_acceptable_height``,
    and a centre at least ``min_acceptable_interperson_dist_ratio`` x max(w, h) away from every
    person already selected, where, as TAO's code has it, (w, h) is the bbox of the image's last
    annotation (not of the selected person). ``bbox`` is this project's earlier rule: bbox height
    and width against the minimums, distance against the selected person's bbox height.

    ``mask_rule`` (extension): ``unlabeled`` (default, TAO's) masks crowd regions (except where they
    overlap a labeled person) and people with no labeled keypoint; ``below_min_kpts`` also masks
    people with fewer than ``min_acceptable_kpts`` (their few labels are not trusted as ground
    truth, nor is the rest of their body taught as background), crowds whole.

    "Person" means one annotation of the converted categories, whatever they are: a hand, an
    animal; the size and distance rules then apply to that object's box (set the minimums for
    the dataset's objects: hands are small, and a 21-joint hand has more keypoints to count).
    """

    min_acceptable_height: float = Field(32, ge=0)
    min_acceptable_width: float = Field(32, ge=0)
    min_acceptable_kpts: int = Field(5, ge=0)
    min_acceptable_interperson_dist_ratio: float = Field(0.3, ge=0)
    center_filter: Literal["tao", "bbox"] = "tao"
    mask_rule: Literal["unlabeled", "below_min_kpts"] = "unlabeled"


class DatasetSpec(SpecModel):
    """The whole dataset spec file.

    ``pose_config`` (inline, the pose config JSON in either form) or ``pose_config_path`` (a file,
    relative to this spec) names the model skeleton the dataset's keypoints are converted to (the
    default: BodyPoseNet's 18 joints); ``keypoint_map`` renames dataset keypoints to the pose
    config's joint names where they differ. Every category listed is converted, as one class: they
    must share their keypoints (e.g. AP-10K's 54 animal species)."""

    dataset: str = "coco"
    root_directory_path: InputDir
    train_data: DataSplitConfig
    test_data: DataSplitConfig
    duplicate_data_with_each_person_as_center: bool = True
    categories: list[CategoryConfig] = Field(min_length=1, max_length=64)
    visibility_flags: VisibilityFlagsConfig = Field(default_factory=VisibilityFlagsConfig)
    data_filtering_params: DataFilteringParams = Field(default_factory=DataFilteringParams)
    pose_config: dict[str, Any] | None = None
    pose_config_path: PoseConfigFile | None = None
    keypoint_map: dict[str, str] = Field(default_factory=dict, max_length=1000)

    @model_validator(mode="after")
    def _one_skeleton(self) -> DatasetSpec:
        if self.pose_config is not None and self.pose_config_path is not None:
            raise CrossFieldError("give the pose config inline or as a file, not both", "pose_config",
                                  "pose_config_path", source=self)
        if self.pose_config is not None:
            from bpnet.pose import PoseConfigError, parse_pose_config

            try:
                parse_pose_config(self.pose_config, "pose_config")
            except PoseConfigError as exc:
                raise CrossFieldError(str(exc).removeprefix("pose_config: "), "pose_config", source=self) from None
        first = self.categories[0]
        for k, other in enumerate(self.categories[1:], 1):
            if other.keypoints != first.keypoints:
                raise CrossFieldError(f"categories[{k}] ('{other.name}') has other keypoints than categories[0] "
                                      f"('{first.name}'); the categories converted together must share them",
                                      "categories", source=self)
        unknown = sorted(set(self.keypoint_map) - set(first.keypoints))
        if unknown:
            raise CrossFieldError(f"renames {unknown}, which are not keypoints of the dataset", "keypoint_map",
                                  source=self)
        return self

    @property
    def skeleton(self) -> Skeleton:
        """The model skeleton this dataset is converted to."""
        from bpnet.pose import BPNET_SKELETON, load_pose_config, parse_pose_config

        if self.pose_config is not None:
            return parse_pose_config(self.pose_config, "dataset spec pose_config")
        return load_pose_config(self.pose_config_path) if self.pose_config_path else BPNET_SKELETON

    @property
    def keypoint_names(self) -> list[str]:
        """The dataset's keypoints under the pose config's joint names (``keypoint_map`` applied)."""
        return [self.keypoint_map.get(n, n) for n in self.categories[0].keypoints]

    @property
    def category_ids(self) -> set[int]:
        return {c.id for c in self.categories}

    def split(self, mode: Literal["train", "test"]) -> DataSplitConfig:
        return self.train_data if mode == "train" else self.test_data

    def under_root(self, relative: str) -> Path:
        return Path(self.root_directory_path) / relative

    @property
    def person_category(self) -> CategoryConfig:
        """The (single) person category whose keypoints are converted."""
        return self.categories[0]
