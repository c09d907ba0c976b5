"""The pretrained path TAO uses: ImageNet VGG19 weights in keras.applications' file layout.

ImageNet weights cannot be downloaded here, so the file is keras.applications' VGG19 with random
weights, written in the Keras 2 HDF5 layout its published ``..._notop.h5`` has."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

from bpnet.model.architecture import BACKBONE_LAYERS
from bpnet.model.io import KERAS_VGG19_SHARED, load_weights_by_name
from bpnet.specs import TrainSpec, load_spec
from bpnet.train import initial_model
from tests.conftest import write_train_spec


@pytest.fixture(scope="module")
def vgg19_file(tmp_path_factory: pytest.TempPathFactory):
    """(path, keras.applications VGG19 model) with random weights, saved as its ImageNet file is."""
    vgg = keras.applications.VGG19(weights=None, include_top=False, input_shape=(32, 32, 3))
    path = tmp_path_factory.mktemp("vgg") / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(path, "w") as h5:
        save_weights_to_hdf5_group(h5, vgg)
    return path, vgg


def test_every_shared_backbone_layer_loads_from_keras_vgg19(vgg19_file, synth_dir, converted, tmp_path):
    path, vgg = vgg19_file
    spec = load_spec(write_train_spec(tmp_path / "t.yaml", synth_dir, converted, **{
        "pretrained_weights": str(path), "model.width_multiplier": 1.0}), TrainSpec)
    model = initial_model(spec, key=None)  # the trainer's path: refuses a shape mismatch
    report = load_weights_by_name(model, path)
    assert report.keras_vgg19 and not report.shape_mismatch
    assert sorted(report.partial) == sorted(KERAS_VGG19_SHARED)  # kernel loaded, bias dropped (no backbone bias)
    assert len(KERAS_VGG19_SHARED) == len(BACKBONE_LAYERS) - 1 and "block4_conv3" in report.not_in_source
    assert {"block4_conv3", "block4_conv4", "block5_conv1"} <= set(report.unused_in_source)
    for name in KERAS_VGG19_SHARED[1:]:
        assert np.array_equal(model.get_layer(name).kernel.numpy(), vgg.get_layer(name).kernel.numpy()), name
    # keras.applications' VGG19 takes BGR; bpnet feeds RGB: the first kernel's input channels reversed
    first = vgg.get_layer("block1_conv1").kernel.numpy()
    assert np.array_equal(model.get_layer("block1_conv1").kernel.numpy(), first[:, :, ::-1, :])
    assert not np.array_equal(first, first[:, :, ::-1, :])
