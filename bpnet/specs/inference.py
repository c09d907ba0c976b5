"""The inference spec (YAML) used by ``inference`` and ``evaluate``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from bpnet.specs.base import (
    DEFAULT_INPUT_SHAPE,
    MAX_IMAGE_SIDE,
    MODEL_STRIDE,
    CrossFieldError,
    InputShape,
    SpecModel,
    SpecPath,
)

MAX_SCALED_SIDE = 2 * MAX_IMAGE_SIDE
"""Largest side an image reaches in multi-scale inference (input side x the largest scale)."""


class InferenceSpec(SpecModel):
    model_path: SpecPath | None = None
    train_spec: SpecPath | None = None
    input_shape: InputShape = DEFAULT_INPUT_SHAPE
    keep_aspect_ratio_mode: Literal["pad_image_input", "adjust_network_input"] | None = "adjust_network_input"
    output_stage_to_use: int | None = Field(None, ge=1, le=6)
    output_upsampling_factor: tuple[int, int] = (8, 8)
    heatmap_threshold: float = Field(0.1, ge=0, le=1)
    paf_threshold: float = Field(0.05, ge=0, le=1)
    multi_scale_inference: bool = False
    scales: list[float] = Field(default_factory=lambda: [0.5, 1.0, 1.5, 2.0], min_length=1, max_length=16)
    # Project extensions (not in TLT): decoder settings the guide does not name, with the
    # published implementation's / OpenPose's values as defaults.
    paf_num_samples: int = Field(10, ge=2, le=1000, description="points sampled along each candidate limb")
    paf_min_fraction: float = Field(0.8, ge=0, le=1, description="share of samples above paf_threshold")
    min_parts: int = Field(3, ge=1, le=18, description="a person needs at least this many keypoints")
    min_person_score: float = Field(0.2, ge=0, description="minimum mean peak+limb score of a person")

    @field_validator("keep_aspect_ratio_mode", mode="before")
    @classmethod
    def _none_string(cls, value: object) -> object:
        """The guide's comment lists the choice as ``None``; accept it as written."""
        return None if value in ("None", "none", "null") else value

    @field_validator("output_upsampling_factor")
    @classmethod
    def _positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        # The maps have stride 8: a factor of 8 is the input's own resolution; beyond it no detail
        # is gained while the upsampled maps grow with the square of the factor.
        if any(v < 1 or v > MODEL_STRIDE for v in value):
            raise ValueError(f"upsampling factors must be in [1, {MODEL_STRIDE}] (the model stride)")
        return value

    @field_validator("scales")
    @classmethod
    def _positive_scales(cls, value: list[float]) -> list[float]:
        if any(s <= 0 for s in value):
            raise ValueError("scales must be > 0")
        return value

    @model_validator(mode="after")
    def _bounded_scaled_input(self) -> InferenceSpec:
        largest = max(self.scales) * max(self.input_shape) if self.multi_scale_inference else max(self.input_shape)
        if largest > MAX_SCALED_SIDE:
            raise CrossFieldError(f"the largest scale x input_shape is {largest:.0f} px; at most {MAX_SCALED_SIDE}",
                                  "scales", "input_shape", source=self)
        return self
