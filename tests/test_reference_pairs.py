"""Every fast function against its readable reference (the registry in tabconv_np.pairs).

A pair added to ``tabconv_np.pairs.PAIRS`` is tested here with no new test
code; each pair's ``tolerance`` says how closely the two must agree.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tabconv_np import pairs, reference

pytestmark = pytest.mark.usefixtures("warm_conv_jit")


@pytest.fixture(scope="module", autouse=True)
def warm_table_kernels():
    from tabconv_np.tables import warmup
    warmup()


@pytest.mark.parametrize("pair", pairs.PAIRS, ids=[p.name for p in pairs.PAIRS])
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=40)
def test_fast_matches_reference(pair, data, seed):
    pairs.run(pair, lambda lo, hi: data.draw(st.integers(lo, hi)), np.random.default_rng(seed))


def test_registry_is_complete():
    """Unique names, and every ``*_naive`` reference checks some fast function."""
    names = [p.name for p in pairs.PAIRS]
    assert len(names) == len(set(names))
    registered = {p.reference for p in pairs.PAIRS}
    naive = {getattr(reference, n) for n in dir(reference) if n.endswith("_naive")}
    assert naive <= registered, f"not in pairs.PAIRS: {sorted(f.__name__ for f in naive - registered)}"
    assert all(p.tolerance for p in pairs.PAIRS)


@pytest.mark.parametrize("pair", pairs.PAIRS, ids=[p.name for p in pairs.PAIRS])
def test_pairs_run_without_hypothesis(pair):
    """The registry needs only NumPy: inputs drawn from a NumPy generator."""
    rng = np.random.default_rng(1)
    for _ in range(3):
        pairs.run(pair, pairs.random_draw(rng), rng)
