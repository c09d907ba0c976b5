"""Figures of any skeleton for the synthetic demo (``bpnet synth --skeleton``): a hand, an animal.

Nothing here knows a joint by name. The skeleton's limbs, walked breadth-first from its first
``assembly_start`` joint (else the best-connected one), give a tree; a radial layout of that tree
is the figure's rest pose: each joint's subtree gets a share of the circle by its number of leaves
and every tree limb has unit length (a 21-joint hand becomes a wrist with five fingers spread round
it). Each figure bends every limb a little (the bends add up along a chain, as fingers curl),
stretches it, and is turned and scaled as a whole. It is drawn as the person demo draws people:
grey limbs and a disc of its joint's own colour on every joint, so a short CPU training learns it.
A derived joint is placed at the midpoint of its two sources, as dataset_convert derives it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from bpnet.pose import Skeleton

BEND = np.deg2rad(18.0)  # largest bend of one limb from its rest direction
STRETCH = (0.8, 1.2)  # limb length range, in units of the rest length
TURN = np.deg2rad(30.0)  # largest rotation of a whole figure


def joint_colors(count: int) -> list[tuple[int, int, int]]:
    """One BGR colour per joint: hues round the colour wheel, alternately bright and dark, so that
    neighbouring joints differ in hue and brightness."""
    return [tuple(int(c) for c in cv2.cvtColor(np.uint8([[[round(i * 180 / count), 255, 255 if i % 2 else 150]]]),
                                               cv2.COLOR_HSV2BGR)[0, 0])
            for i in range(count)]


def painter(canvas: np.ndarray, mask: np.ndarray):
    """``paint(cv2_fn, *args, color=..., **kw)``: draw on the image in ``color`` and on the
    figure's mask in 255, so the mask covers exactly what was drawn."""
    def paint(fn, *args, color, **kw):
        fn(canvas, *args, color=color, **kw)
        fn(mask, *args, color=255, **kw)
    return paint


@dataclass(frozen=True, eq=False)
class FigureLayout:
    """A skeleton's tree (BFS order, parent of each joint) and rest direction of each tree limb."""

    skeleton: Skeleton
    order: tuple[int, ...]  # joints, root first, each after its parent
    parent: tuple[int, ...]  # -1 for the root
    direction: np.ndarray  # (J,) rest angle of the limb parent -> joint (radians; the root's unused)

    @classmethod
    def of(cls, skeleton: Skeleton) -> FigureLayout:
        count = skeleton.num_joints
        degree = np.bincount(np.asarray(skeleton.limbs).ravel(), minlength=count)
        root = skeleton.assembly_start[0] if skeleton.assembly_start else int(degree.argmax())
        neighbours: list[list[int]] = [[] for _ in range(count)]
        for a, b in skeleton.limbs:
            neighbours[a].append(b)
            neighbours[b].append(a)
        parent, order = [-1] * count, [root]
        for j in order:  # breadth-first: order grows while it is walked
            for n in neighbours[j]:
                if n != root and parent[n] == -1:
                    parent[n] = j
                    order.append(n)
        children: list[list[int]] = [[] for _ in range(count)]
        for j in order[1:]:
            children[parent[j]].append(j)
        leaves = np.ones(count)
        for j in reversed(order):
            if children[j]:
                leaves[j] = sum(leaves[c] for c in children[j])
        start, span, direction = np.zeros(count), np.zeros(count), np.zeros(count)
        span[root] = 2 * np.pi
        for j in order:
            at = start[j]
            for c in children[j]:
                start[c], span[c] = at, span[j] * leaves[c] / leaves[j]
                direction[c] = at + span[c] / 2
                at += span[c]
        return cls(skeleton, tuple(order), tuple(parent), direction)

    def pose(self, rng: np.random.Generator, size: float) -> np.ndarray:
        """(J, 2) keypoints of a randomly posed figure about ``size`` pixels across, centred at 0."""
        count = self.skeleton.num_joints
        bend = np.zeros(count)
        pts = np.zeros((count, 2))
        for j in self.order[1:]:
            p = self.parent[j]
            bend[j] = bend[p] + rng.uniform(-BEND, BEND)
            angle = self.direction[j] + bend[j]
            pts[j] = pts[p] + rng.uniform(*STRETCH) * np.array((np.cos(angle), np.sin(angle)))
        index = {name: k for k, name in enumerate(self.skeleton.joints)}
        for d in self.skeleton.derived:
            pts[index[d.name]] = (pts[index[d.a]] + pts[index[d.b]]) / 2
        pts -= (pts.min(axis=0) + pts.max(axis=0)) / 2
        turn = rng.uniform(-TURN, TURN)
        rot = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
        extent = max(float(np.ptp(pts, axis=0).max()), 1e-6)
        return (pts @ rot.T) * (size / extent)

    def draw(self, canvas: np.ndarray, pts: np.ndarray, size: float, rng: np.random.Generator) -> np.ndarray:
        """Draw a figure (grey limbs, a disc of its joint's colour on every joint); returns the
        boolean mask of the pixels it covers."""
        mask = np.zeros(canvas.shape[:2], np.uint8)
        thick = max(2, int(0.03 * size))
        p = np.round(pts).astype(np.int32)
        paint = painter(canvas, mask)
        limb = tuple(int(c) for c in rng.integers(40, 90, 3))
        for a, b in self.skeleton.limbs:
            paint(cv2.line, tuple(p[a]), tuple(p[b]), color=limb, thickness=thick)
        for j, color in enumerate(joint_colors(self.skeleton.num_joints)):
            paint(cv2.circle, tuple(p[j]), max(2, int(0.03 * size)), color=color, thickness=-1)
        return mask > 0


def skeleton_category(skeleton: Skeleton) -> dict:
    """The COCO ``categories`` entry of a synthetic dataset of ``skeleton``'s figures: the joints it
    labels (all but the derived ones) and the limbs between them (1-based, dataset order)."""
    names = list(skeleton.labeled_joints)
    edges = [[names.index(a) + 1, names.index(b) + 1] for a, b in skeleton.limb_names() if a in names and b in names]
    return {"supercategory": skeleton.name, "id": 1, "name": skeleton.name, "num_joints": len(names),
            "keypoints": names, "skeleton": edges, "skeleton_edge_names": [[names[a - 1], names[b - 1]]
                                                                          for a, b in edges]}
