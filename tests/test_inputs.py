"""The input contract of networks (tabconv_np.network): range, dtype, normalisation, empty batches."""
import os

import numpy as np
import pytest

import tabconv_np
from tabconv_np.errors import ConfigError, DataError, ShapeError
from tabconv_np.evaluate import evaluate
from tabconv_np.models import build

from helpers import randomize

WEIGHTS = os.path.join(os.path.dirname(__file__), "..", "weights", "resnet18-paper_fashion-mnist.h5")


@pytest.fixture(scope="module")
def net():
    n = randomize(build("lenet", 1, 10))
    n.preprocess = {"mean": [0.3], "std": [0.4]}
    return n


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (5, 1, 28, 28), dtype=np.uint8)


def test_uint8_and_unit_floats_agree_in_predict_and_call(net, images):
    ref = net.predict(images)
    np.testing.assert_allclose(net.predict(images.astype(np.float32) / 255), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(net(images), ref)                     # net(uint8) normalises too
    np.testing.assert_array_equal(net(net.normalize(images)), ref)      # net(float) takes the tensor
    nhwc = images.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(net(nhwc, layout="NHWC"), ref, rtol=1e-5, atol=1e-5)
    plan = tabconv_np.prepare(net)                                      # a prepared plan: the same contract
    np.testing.assert_allclose(plan(images), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(plan(nhwc, layout="NHWC"), ref, rtol=1e-4, atol=1e-4)


def test_pixels_as_floats_are_refused_with_the_remedy(net, images):
    with pytest.raises(ShapeError, match="divide 0-255 pixels by 255 or pass them as uint8"):
        net.predict(images.astype(np.float32))
    with pytest.raises(ShapeError, match=r"net\(x\)"):
        net.predict(net.normalize(images))
    net.predict(np.clip(images / 255 + 0.2, 0, None))                   # mild overshoot is fine


def test_calibration_pixels_as_floats_are_refused(net, images):
    with pytest.raises(ShapeError, match="calibration images.*divide 0-255"):
        tabconv_np.convert(net, images.astype(np.float32), n_codebooks=2, n_prototypes=4)


def test_declared_range_scales_uint8(images):
    a = randomize(build("lenet", 1, 10))
    b = a.copy()
    b.preprocess = {"range": [0, 255], "std": [255]}        # takes 0-255 floats, same function
    np.testing.assert_allclose(b.predict(images), a.predict(images), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(b.predict(images.astype(np.float32)), a.predict(images), rtol=1e-4, atol=1e-4)
    b.preprocess = {"range": [1, 1]}
    with pytest.raises(ConfigError, match="lo < hi"):
        b.predict(images)


def test_empty_batches_and_bad_batch_sizes(net, images):
    assert net(images[:0]).shape == (0, 10)
    assert net(np.zeros((0, 1, 28, 28), np.float32)).shape == (0, 10)
    assert net.predict(images[:0]).shape == (0, 10)
    with pytest.raises(ShapeError):
        net(np.zeros((0, 3, 28, 28), np.float32))
    for bad in (0, -1, 2.5):
        with pytest.raises(ConfigError, match="batch"):
            net.predict(images, batch=bad)
    with pytest.raises(DataError, match="no images"):
        evaluate(net, images[:0], np.zeros(0, np.int64))
    res = tabconv_np.convert(net, images, n_codebooks=2, n_prototypes=4, iters=1, progress=False)
    with pytest.raises(DataError, match="no images"):
        res.accuracies(images[:0], np.zeros(0, np.int64))
    from tabconv_np.demo import run_demo
    with pytest.raises(ConfigError, match="test"):
        run_demo(test=0)


def test_one_parameter_count(net):
    assert net.num_params() == tabconv_np.count_ops(net).total["params"]
    assert f"{net.num_params():,} parameters (BN running statistics not counted)" in repr(net)


@pytest.mark.skipif(not os.path.exists(WEIGHTS), reason="shipped weights not present")
def test_shipped_resnet_counts_one_parameter_number():
    net = tabconv_np.load(WEIGHTS)
    n = tabconv_np.count_ops(net).total["params"]
    assert net.num_params() == n == 11_177_034
    assert repr(net).splitlines()[0].endswith("11,177,034 parameters (BN running statistics not counted))")


def test_network_input_shape_is_checked_not_truncated():
    from tabconv_np.errors import ConfigError
    from tabconv_np.layers import ReLU
    from tabconv_np.network import Network
    for bad in ((1, float("inf"), 3), (1, 2.5, 3), (1, 0, 3), (1, 28), "1x28x28"):
        with pytest.raises(ConfigError, match="input_shape"):
            Network(ReLU(), bad)
