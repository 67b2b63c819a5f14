"""Shared test setup.

* Hypothesis profile ``tabconv`` (loaded by default; pick another with
  ``HYPOTHESIS_PROFILE``): no per-example deadline, because the first call of
  a Numba kernel compiles it (or loads it from the cache) and would trip
  Hypothesis's 200 ms deadline; 50 examples per test unless a test says
  otherwise.  ``HYPOTHESIS_PROFILE=thorough`` runs 500 (in the tests that
  do not set their own ``max_examples``).
* ``r18_sample``: ``r18_sample(calib, test)`` is ``(net, xc, xt, yt)``, the
  shipped ResNet-18 "paper" (Fashion-MNIST) loaded afresh, ``calib`` shipped
  sample training images and ``test`` sample test images with their labels.
* ``warm_conv_jit``: a session fixture that compiles (or loads from the
  on-disk cache) every convolution kernel, serial and parallel, for the array
  layouts the drivers pass, so that timings and deadlines inside tests see
  warm kernels.
"""
import os
import warnings

# before anything loads libgomp (torch, Numba's omp layer): see kernels/_jit.py
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "tabconv", deadline=None, max_examples=50,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "thorough", deadline=None, max_examples=500,
    suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "tabconv"))


@pytest.fixture(scope="session")
def r18_sample():
    """See the module docstring."""
    import tabconv_np
    from tabconv_np.data import load_dataset
    path = os.path.join(os.path.dirname(__file__), os.pardir, "weights", "resnet18-paper_fashion-mnist.h5")

    def make(calib, test):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # the shipped file predates checksums
            net = tabconv_np.load(path)
        xt, yt = load_dataset("sample", "test", limit=test)
        return net, load_dataset("sample", "train", limit=calib)[0], xt, yt
    return make


@pytest.fixture(scope="session")
def warm_conv_jit():
    """Compile or cache-load every conv kernel once per test session."""
    from tabconv_np.functional import conv2d, im2col_rows
    from tabconv_np.conv.direct import phase_split
    from tabconv_np.kernels import direct_kernels, im2col_kernels, layout_kernels, mec_kernels

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 6, 5)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 2)).astype(np.float32)
    b = np.ones(4, np.float32)
    xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    for method in ("im2col", "mec", "direct"):
        conv2d(x, w, b, stride=(1, 2), padding=1, groups=2, method=method)
        conv2d(xh, w, b, stride=(1, 2), padding=1, groups=2, method=method, layout="NHWC")
    im2col_rows(x, 3, padding=1)
    im2col_rows(xh, 3, padding=1, layout="NHWC")
    # both entries of every kernel (small calls never reach the parallel ones through pick)
    rows = np.empty((2 * 6 * 5, 4 * 9), np.float32)
    L = np.empty((2, 2 * 5, 8 * 3 * 2), np.float32)
    out = np.empty((2, 4, 6, 3), np.float32)
    xs = phase_split(x, (1, 2), (1, 1, 1, 1), (1, 1), (3, 2), (6, 3))
    calls = [
        (im2col_kernels.lower_nchw, (x, 3, 3, 1, 1, 1, 1, 1, 1, 6, 5, rows)),
        (im2col_kernels.lower_nhwc, (xh, 3, 3, 1, 1, 1, 1, 1, 1, 6, 5, rows)),
        (im2col_kernels.lower_gijc, (xh, 2, 3, 3, 1, 1, 1, 1, 1, 1, 6, 5, rows)),
        (im2col_kernels.lower_nchw_gijc, (x, 2, 3, 3, 1, 1, 1, 1, 1, 1, 6, 5, rows)),
        (layout_kernels.swap_last2, (x.reshape(2, 4, 30), np.empty((2, 30, 4), np.float32), 7)),
        (mec_kernels.lower_mec, (xh, 2, 3, 1, 1, 1, 1, 8, 5, L)),
        (direct_kernels.direct_phases, (xs, w, b, 1, 1, 2, 6, 3, out)),
    ]
    for kernel, args in calls:
        kernel.parallel(*args)
        kernel.serial(*args)
    return True
