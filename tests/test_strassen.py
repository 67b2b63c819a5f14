"""Strassen's product (conv/strassen.py): seven products a level, the stated error bound.

Random shapes under hypothesis are the ``strassen`` and ``conv2d[strassen]``
pairs in tests/test_reference_pairs.py; here the count of products and a
convolution large enough for the default cutoff to recurse.
"""
import numpy as np

from tabconv_np.conv import strassen as S
from tabconv_np.functional import conv2d
from tabconv_np.pairs import strassen_bound
from tabconv_np.reference import conv2d_naive


def test_each_level_does_seven_block_products(monkeypatch):
    calls = []
    real = np.matmul
    monkeypatch.setattr(S.np, "matmul", lambda a, b: calls.append(a.shape) or real(a, b))
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((8, 6)).astype(np.float32), rng.standard_normal((6, 10)).astype(np.float32)
    for levels, products in ((0, 1), (1, 7), (2, 49)):
        calls.clear()
        C = S.strassen(A, B, levels, cutoff=1)
        assert len(calls) == products
        assert np.abs(C - A.astype(np.float64) @ B).max() <= strassen_bound(6, levels, np.abs(A).max(),
                                                                           np.abs(B).max())
    calls.clear()
    S.strassen(A, B, 3, cutoff=16)                      # below the cutoff: one BLAS call
    assert len(calls) == 1


def test_strassen_convolution_recurses_at_the_default_cutoff_and_stays_within_the_bound(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 16, 10, 10)).astype(np.float32)
    w = rng.standard_normal((64, 16, 3, 3)).astype(np.float32)
    calls = []
    real = np.matmul
    monkeypatch.setattr(S.np, "matmul", lambda a, b: calls.append(a.shape) or real(a, b))
    got = conv2d(x, w, padding=1, method="strassen")
    assert len(calls) == 7                              # rows 200, K 144, C_out 64 >= 64: one level
    want = conv2d_naive(x, w, padding=1)
    assert np.abs(got - want).max() <= strassen_bound(16 * 9, 1, np.abs(x).max(), np.abs(w).max())


def test_cost_is_seven_eighths_of_the_multiplications_per_level():
    assert S.strassen_cost(64, 64, 64, levels=1)[0] == 7 * 32 ** 3
    assert S.strassen_cost(128, 128, 128, levels=2)[0] == 49 * 32 ** 3
    assert S.strassen_cost(65, 64, 64, levels=1)[0] == 7 * 33 * 32 * 32     # 65 rows padded to 66
    assert S.strassen_cost(30, 64, 64, levels=1) == (30 * 64 * 64, 30 * 63 * 64)  # below the cutoff
