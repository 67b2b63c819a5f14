"""The layers imported graphs use, against torch on random shapes and settings (hypothesis):
pooling with ceil mode, four-sided pads and count_include_pad, LRN, Resize in every coordinate
mode torch has, ConvTranspose2d, the activations; both layouts."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from tabconv_np.activations import HardSigmoid, HardSwish, LeakyReLU, Sigmoid, Softmax, Tanh  # noqa: E402
from tabconv_np.layers import LRN, AvgPool2d, MaxPool2d  # noqa: E402
from tabconv_np.upsampling import ConvTranspose2d, Resize  # noqa: E402

F = torch.nn.functional
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None)


def _both_layouts(layer, x):
    """The layer's NCHW output, checked equal to its NHWC output."""
    y = layer(x, "NCHW")
    yt = layer(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), "NHWC")
    np.testing.assert_allclose(yt.transpose(0, 3, 1, 2), y, rtol=1e-5, atol=1e-5)
    assert y.shape[1:] == tuple(layer.out_shape(x.shape[1:]))
    return y


def _close(y, ref, tol=1e-5):
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol * max(1.0, float(np.abs(ref).max())))


@SETTINGS
@given(st.integers(1, 3), st.integers(5, 11), st.integers(5, 11), st.integers(1, 4), st.integers(1, 3),
       st.integers(0, 2), st.booleans(), st.booleans(), st.integers(0, 2 ** 31 - 1))
def test_pooling_matches_torch(c, h, w, k, s, p, ceil, include, seed):
    p = min(p, k // 2)
    x = np.random.default_rng(seed).normal(size=(2, c, h, w)).astype(np.float32)
    t = torch.from_numpy(x)
    _close(_both_layouts(MaxPool2d(k, s, p, ceil), x), F.max_pool2d(t, k, s, p, ceil_mode=ceil).numpy())
    _close(_both_layouts(AvgPool2d(k, s, p, ceil, include), x),
           F.avg_pool2d(t, k, s, p, ceil_mode=ceil, count_include_pad=include).numpy())


@SETTINGS
@given(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2 ** 31 - 1))
def test_four_sided_pool_pads_equal_explicit_padding(t, b, l, r, seed):
    """Pads (top, bottom, left, right): max pooling as pooling a -inf-padded map, average pooling
    without the pads in the count as the ratio of two zero-padded sums."""
    x = np.random.default_rng(seed).normal(size=(1, 2, 7, 6)).astype(np.float32)
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=-np.inf)
    ref = F.max_pool2d(torch.from_numpy(xp), 3, 2).numpy()
    _close(_both_layouts(MaxPool2d(3, 2, (t, b, l, r)), x), ref)
    xz = torch.from_numpy(np.pad(x, ((0, 0), (0, 0), (t, b), (l, r))))
    ones = torch.from_numpy(np.pad(np.ones_like(x), ((0, 0), (0, 0), (t, b), (l, r))))
    ref = (F.avg_pool2d(xz, 3, 2) / F.avg_pool2d(ones, 3, 2)).numpy()
    _close(_both_layouts(AvgPool2d(3, 2, (t, b, l, r), count_include_pad=False), x), ref)


@SETTINGS
@given(st.sampled_from([1, 3, 5, 7]), st.floats(1e-4, 1.0), st.floats(0.1, 1.0), st.floats(0.5, 3.0),
       st.integers(1, 9), st.integers(0, 2 ** 31 - 1))
def test_lrn_matches_torch(size, alpha, beta, k, c, seed):
    x = np.random.default_rng(seed).normal(size=(2, c, 3, 4)).astype(np.float32)
    ref = F.local_response_norm(torch.from_numpy(x), size, alpha, beta, k).numpy()
    _close(_both_layouts(LRN(size, alpha, beta, k), x), ref)


@SETTINGS
@given(st.integers(2, 7), st.integers(2, 7), st.integers(1, 15), st.integers(1, 15),
       st.sampled_from(["nearest", "bilinear", "bilinear_corners"]), st.integers(0, 2 ** 31 - 1))
def test_resize_matches_torch(h, w, ho, wo, mode, seed):
    x = np.random.default_rng(seed).normal(size=(2, 3, h, w)).astype(np.float32)
    corners = mode == "bilinear_corners"
    ref = F.interpolate(torch.from_numpy(x), size=(ho, wo), mode="nearest" if mode == "nearest" else "bilinear",
                        align_corners=corners if mode != "nearest" else None).numpy()
    # (torch's half-pixel rule has no special case for one output pixel: ONNX's half_pixel, not pytorch_half_pixel)
    coord = "asymmetric" if mode == "nearest" else "align_corners" if corners else "half_pixel"
    layer = Resize((ho, wo), "nearest" if mode == "nearest" else "linear", coord, "floor")
    _close(_both_layouts(layer, x), ref)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2), st.integers(0, 1), st.integers(1, 2),
       st.sampled_from([1, 2]), st.integers(0, 2 ** 31 - 1))
def test_conv_transpose_matches_torch(k, s, p, op, d, groups, seed):
    op = min(op, max(s, d) - 1)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, 4, 5, 6)).astype(np.float32)
    layer = ConvTranspose2d(4, 6, k, s, p, op, d, groups)
    layer.params["weight"][...] = rng.normal(size=layer.params["weight"].shape)
    layer.params["bias"][...] = rng.normal(size=6)
    try:
        ref = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(layer.params["weight"]),
                                 torch.from_numpy(layer.params["bias"]), s, p, op, groups, d).numpy()
    except RuntimeError:            # an empty output: refused by both
        with pytest.raises(Exception):
            layer.out_shape((4, 5, 6))
        return
    _close(_both_layouts(layer, x), ref, 1e-4)
    cost = layer.cost((4, 5, 6))
    assert cost["macs"] == int(np.prod(ref.shape[1:])) * (4 // groups) * k * k


@pytest.mark.parametrize("layer, ref", [
    (LeakyReLU(0.1), lambda t: F.leaky_relu(t, 0.1)), (Sigmoid(), torch.sigmoid), (Tanh(), torch.tanh),
    (HardSigmoid(1 / 6, 0.5), F.hardsigmoid), (HardSwish(), F.hardswish), (Softmax(0), lambda t: F.softmax(t, 1)),
], ids=lambda v: type(v).__name__)
def test_activations_match_torch(layer, ref):
    x = (np.random.default_rng(0).normal(size=(2, 5, 3, 4)) * 4).astype(np.float32)
    _close(_both_layouts(layer, x), ref(torch.from_numpy(x)).numpy())
