"""Training on real photos does not collapse, puts joints where the people are and learns the
limbs whichever way they point (issue 23, docs/real_training.md): the four COCO photos of
tests/data/real_people, the recipe of ``benchmarks/overfit_real.py --cases 4`` (whole-photo
geometry jittered by a stride, 10 degrees and 10% of scale, Adam 1e-3 without stage-wise
multipliers, plain L2, 800 steps: about 11 CPU-minutes), then its maps on those photos at the
inference geometry (``benchmarks/real_maps``). Slow.

What 800 steps of the recipe gave through the CLI when its rotation was [-40, 0] degrees by
accident (docs/real_training.md, section 7): joint peaks a median 5.1 photo pixels from their
labels, the PAFs' negative components predicted at 0.90 of their labels (TAO's focal L2:
0.00-0.02), AP 0.178 on the four photos; the jittered recipe reached AP 0.48 at 750 steps
(the thresholds below were set on the rotated recipe)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.real_maps import joint_distances, labelled_photos, learned_by_sign, paf_response
from benchmarks.real_subset import MEMORISE_IDS, REPO_IMAGES, infer_spec, make_subset, overfit_spec
from bpnet.data.convert import ConvertSettings, convert_dataset
from bpnet.infer.predict import KerasBackend, Predictor
from bpnet.specs import DatasetSpec, InferenceSpec, TrainSpec, load_spec
from bpnet.train import train

pytestmark = pytest.mark.slow

STEPS = 800
# The collapsed runs gave the same joint maps for every photo (spread 4e-5 after 10 steps
# at its rates); any two photos' joint maps must differ by more than this somewhere (labels peak at 1).
MIN_SPREAD = 0.3
# Median distance in photo pixels (640x480, 15 px a stride-8 cell at input height 256) from each
# labelled joint to the nearest heatmap peak of that joint: measured 5.1; constant maps put every
# joint's peaks in the same places and miss by the size of a person.
MAX_MEDIAN_DISTANCE = 10.0
# Predicted / label PAF component along the labelled limbs, for components below -0.5 (limbs
# pointing left or up): measured 0.90; TAO's focal L2 leaves them at 0.00-0.02.
MIN_NEGATIVE_PAF = 0.5


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Predictor, dict]:
    root = tmp_path_factory.mktemp("real_people")
    dataset = make_subset(REPO_IMAGES, MEMORISE_IDS, root / "dataset", each_person=False)
    convert_dataset(load_spec(dataset, DatasetSpec), root / "records" / "train", ConvertSettings(generate_masks=True))
    spec_path = overfit_spec(dataset, root / "records", root, geometry="whole", num_epoch=STEPS, width=0.25)
    result = train(load_spec(spec_path, TrainSpec), root / "run", key="real")
    predictor = Predictor(KerasBackend.load(result.model_path, "real"),
                          load_spec(infer_spec(spec_path, root), InferenceSpec), load_spec(spec_path, TrainSpec))
    return predictor, labelled_photos(dataset.parent, predictor)  # each photo's maps, once


def test_joint_maps_differ_between_real_photos(trained):
    _, photos = trained
    joints = [photo.heat[..., :-1] for photo in photos.values()]  # all 640x480: one grid
    spreads = [float(np.abs(a - b).max()) for k, a in enumerate(joints) for b in joints[:k]]
    assert min(spreads) > MIN_SPREAD, spreads


def test_joint_peaks_of_trained_photos_land_near_their_labels(trained):
    predictor, photos = trained
    distances = np.concatenate([joint_distances(photo, predictor.spec.heatmap_threshold) for photo in photos.values()])
    assert np.median(distances) < MAX_MEDIAN_DISTANCE, np.round(distances, 1)


def test_limbs_pointing_left_or_up_are_learned(trained):
    predictor, photos = trained
    learned = learned_by_sign([pair for photo in photos.values() for pair in paf_response(photo, predictor.skeleton)])
    assert learned["negative"] > MIN_NEGATIVE_PAF, learned
