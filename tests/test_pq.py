"""Product quantization: k-means, encoding, decoding; the PQ kernels serial vs parallel, and
tables and lookups against decode-then-multiply.

Encoding, table building and lookups against their references are the ``encode``,
``build_table`` and ``lookup`` pairs of tests/test_reference_pairs.py.
"""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tabconv_np.errors import ConfigError, ShapeError
from tabconv_np.kernels import pq_kernels as K
from tabconv_np.pq import ProductQuantizer, check_codes, code_dtype, kmeans, subspace_length
from tabconv_np.reference import build_table_naive, lookup_naive


@pytest.fixture(scope="module", autouse=True)
def warm():
    from tabconv_np.tables import warmup
    warmup()


@given(st.integers(1, 300), st.integers(1, 50), st.integers(1, 9), st.integers(1, 300),
       st.integers(1, 20), st.integers(0, 2**31 - 1))
@settings(max_examples=25)
def test_serial_and_parallel_kernels_agree_bitwise(N, D, C, Kp, M, seed):
    C = min(C, D)
    Ds = subspace_length(D, C)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D)).astype(np.float32)
    P = rng.standard_normal((C, Kp, Ds)).astype(np.float32)
    W = rng.standard_normal((D, M)).astype(np.float32)
    b = rng.standard_normal(M).astype(np.float32)
    dt = code_dtype(Kp)
    out = {}
    for entry in ("parallel", "serial"):
        codes = np.empty((N, C), dt)
        table = np.empty((C, Kp, M), np.float32)
        getattr(K.encode, entry)(X, P, codes)
        getattr(K.build_table, entry)(P, W, table)
        out[entry] = codes, table
    (codes, table), (codes_s, table_s) = out["parallel"], out["serial"]
    assert np.array_equal(codes, codes_s)
    assert np.array_equal(table.view(np.uint32), table_s.view(np.uint32))
    # lookups of the same codes and table
    y, y_s = np.empty((N, M), np.float32), np.empty((N, M), np.float32)
    K.lookup.parallel(codes, table, b, True, y)
    K.lookup.serial(codes, table, b, True, y_s)
    assert np.array_equal(y.view(np.uint32), y_s.view(np.uint32))


@given(st.integers(1, 60), st.integers(1, 40), st.integers(1, 8), st.integers(2, 40),
       st.integers(1, 12), st.booleans(), st.integers(0, 2**31 - 1))
@settings(max_examples=30)
def test_lookup_equals_decode_then_multiply(N, D, C, Kp, M, bias, seed):
    C = min(C, D)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((max(N, Kp) + 5, D)).astype(np.float32)
    pq = ProductQuantizer(C, Kp, iters=3, seed=seed, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pq.fit(X)
    W = rng.standard_normal((D, M)).astype(np.float32)
    b = rng.standard_normal(M).astype(np.float32) if bias else None
    codes = pq.encode(X[:N])
    T = np.empty((pq.C, pq.K, M), np.float32)
    K.build_table.serial(pq.prototypes, W, T)
    assert np.allclose(T, build_table_naive(pq.prototypes, W), rtol=1e-5, atol=1e-5)
    y = np.empty((N, M), np.float32)
    K.lookup.serial(codes, T, b if bias else np.zeros(0, np.float32), bias, y)
    ref = pq.decode(codes).astype(np.float64) @ W + (0 if b is None else b)
    # float32 sums of D products: compare against the float64 result with a summation bound
    scale = np.abs(pq.decode(codes)).astype(np.float64) @ np.abs(W) + (0 if b is None else np.abs(b))
    assert np.all(np.abs(y - ref) <= 4 * (D + C + 1) * 2.0**-24 * scale + 1e-6)
    assert np.allclose(y, lookup_naive(codes, T, b), rtol=1e-5, atol=1e-5)


def test_fit_is_deterministic_and_seed_dependent():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 20)).astype(np.float32)
    a = ProductQuantizer(4, 16, seed=3).fit(X).prototypes
    b = ProductQuantizer(4, 16, seed=3).fit(X).prototypes
    c = ProductQuantizer(4, 16, seed=4).fit(X).prototypes
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("init", ["k-means++", "random", "product"])
def test_kmeans_inits_reduce_error(init):
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((8, 6)) * 10
    X = (centers[rng.integers(0, 8, 800)] + rng.standard_normal((800, 6)) * 0.1).astype(np.float32)
    cent, it, sse = kmeans(X, 8, 20, init, np.random.default_rng(0))
    assert cent.shape == (8, 6) and cent.dtype == np.float32
    total = ((X - X.mean(0)) ** 2).sum()
    assert sse < total / 5                            # far better than one centroid
    if init == "k-means++":                           # D^2 seeding finds the 8 groups here
        assert sse / len(X) < 0.1                     # the noise level: 6 * 0.1**2
    pq = ProductQuantizer(2, 64, init=init, seed=0).fit(X)
    assert pq.quantization_error(X) < ((X - X.mean(0)) ** 2).sum(1).mean() / 10


def test_empty_clusters_are_reseeded():
    # 3 tight groups plus far outliers; a bad init leaves clusters empty
    X = np.concatenate([np.zeros((50, 2)), np.ones((50, 2)), np.full((50, 2), 2.0),
                        [[100, 100], [-100, 50], [40, -80]]]).astype(np.float32)
    cent, _, sse = kmeans(X, 6, 10, "random", np.random.default_rng(0))
    assert sse < 1e-6                                  # 6 distinct points, 6 centroids: exact


def test_codes_dtype_uint8_and_uint16():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((700, 4)).astype(np.float32)
    assert ProductQuantizer(2, 256, iters=1).fit(X).encode(X).dtype == np.uint8
    pq = ProductQuantizer(1, 300, iters=1).fit(X)
    codes = pq.encode(X)
    assert codes.dtype == np.uint16 and codes.max() < 300
    assert code_dtype(256) == np.uint8 and code_dtype(257) == np.uint16


def test_too_few_distinct_rows_warns_and_caps_K():
    X = np.repeat(np.arange(10, dtype=np.float32)[:, None], 3, axis=1)   # 10 distinct rows
    with pytest.warns(UserWarning, match="layer conv9.*capped at 10"):
        pq = ProductQuantizer(1, 64, name="conv9").fit(X)
    assert pq.K == 10 and pq.prototypes.shape == (1, 10, 3)
    assert np.array_equal(pq.decode(pq.encode(X)), X)  # every distinct row is a prototype


def test_padding_when_C_does_not_divide_D():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 10)).astype(np.float32)
    pq = ProductQuantizer(4, 8, seed=0).fit(X)
    assert pq.Ds == 3 and pq.prototypes.shape == (4, 8, 3)
    assert np.all(pq.prototypes[3, :, 1:] == 0)         # padding columns stay zero
    assert pq.decode(pq.encode(X)).shape == (300, 10)


def test_out_of_range_codes_raise():
    rng = np.random.default_rng(0)
    pq = ProductQuantizer(2, 4).fit(rng.standard_normal((50, 6)).astype(np.float32))
    with pytest.raises(ShapeError, match=r"\[0, 4\)"):
        pq.decode(np.array([[0, 4]], np.uint8))
    with pytest.raises(ShapeError, match="values must be"):
        pq.decode(np.array([[-1, 0]]))
    with pytest.raises(ShapeError, match="shape"):
        pq.decode(np.zeros((3, 3), np.uint8))
    with pytest.raises(ShapeError, match="integer"):
        pq.decode(np.zeros((3, 2), np.float32))
    assert check_codes(np.zeros((0, 2), np.uint8), 2, 4).shape == (0, 2)


def test_bad_settings_raise():
    with pytest.raises(ConfigError):
        ProductQuantizer(0, 16)
    with pytest.raises(ConfigError):
        ProductQuantizer(2, 0)
    with pytest.raises(ConfigError):
        ProductQuantizer(2, 16385)
    with pytest.raises(ConfigError):
        ProductQuantizer(2, 16, init="magic")
    with pytest.raises(ConfigError, match="exceeds"):
        ProductQuantizer(5, 4).fit(np.zeros((10, 3), np.float32))
    with pytest.raises(ShapeError, match="NaN"):
        ProductQuantizer(1, 4).fit(np.full((10, 3), np.nan, np.float32))
    with pytest.raises(ConfigError, match="fit"):
        ProductQuantizer(1, 4).encode(np.zeros((2, 3), np.float32))
    pq = ProductQuantizer(1, 4).fit(np.random.default_rng(0).standard_normal((20, 3)))
    with pytest.raises(ShapeError, match="3 columns"):
        pq.encode(np.zeros((2, 4), np.float32))
