"""Prepared plans (tabconv_np.plan): the same outputs as the network, a snapshot of it.

The per-convolution equivalence (taps dropped, epilogue fused) against the
reference is the ``prepared_conv`` pair in tests/test_reference_pairs.py;
here whole networks: shipped weights, every bundled architecture, graphs,
table layers, both layouts, empty batches and NaN.
"""
import os

import numpy as np
import pytest

import tabconv_np
from tabconv_np.blocks import Graph, Sequential
from tabconv_np.errors import ShapeError
from tabconv_np.layers import BatchNorm2d, Clip, Conv2d, Flatten, GlobalAvgPool2d, Linear, ReLU
from tabconv_np.models import build
from tabconv_np.network import Network
from tabconv_np.plan import PreparedConv, live_taps, prepare
from helpers import randomize

HERE = os.path.dirname(__file__)
WEIGHTS = os.path.join(HERE, os.pardir, "weights")


def _close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max() + 1))


@pytest.mark.parametrize("name", ["resnet18-paper_fashion-mnist.h5", "nin_fashion-mnist.h5"])
def test_plan_equals_the_shipped_network(name):
    net = tabconv_np.load(os.path.join(WEIGHTS, name))
    plan = prepare(net)
    x = np.random.default_rng(0).standard_normal((3,) + net.input_shape).astype(np.float32)
    want = net(x)
    _close(plan(x), want)
    _close(plan(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), layout="NHWC"), want)
    assert plan(x[:0]).shape == (0,) + tuple(net.out_shape)


@pytest.mark.parametrize("arch, shape", [("resnet18-cifar", (3, 16, 16)), ("resnet34-paper", (1, 28, 28)),
                                         ("nin", (1, 28, 28)), ("lenet", (1, 28, 28))])
def test_plan_equals_every_bundled_architecture(arch, shape):
    net = randomize(build(arch, shape[0], 10, input_size=shape[1]), seed=3)
    x = np.random.default_rng(1).standard_normal((2,) + shape).astype(np.float32)
    _close(prepare(net)(x), net(x))


def test_late_resnet_convs_drop_the_taps_that_read_only_padding():
    """ResNet-18 "paper" at 28x28: stage 4 runs at 1x1, so its 3x3 convs become 1x1 (or 2x2)."""
    net = tabconv_np.load(os.path.join(WEIGHTS, "resnet18-paper_fashion-mnist.h5"))
    shapes = set()
    orig = PreparedConv.__init__

    def spy(self, *a, **k):
        orig(self, *a, **k)
        shapes.add((self.in_shape, self.out_shape, self.kernel))
    PreparedConv.__init__ = spy
    try:
        prepare(net)
    finally:
        PreparedConv.__init__ = orig
    assert {s[2] for s in shapes if s[:2] == ((512, 1, 1), (512, 1, 1))} == {(1, 1)}  # 3x3 pad 1 on 1x1
    assert ((256, 2, 2), (512, 1, 1), (2, 2)) in shapes      # stride 2 from 2x2: 4 taps live
    assert ((256, 2, 2), (256, 2, 2), (3, 3)) in shapes      # every tap reads some pixel
    assert ((64, 7, 7), (64, 7, 7), (3, 3)) in shapes
    assert live_taps(1, 1, 3, 1, 1, 1) == (1, 2)
    assert live_taps(1, 2, 1, 2, 1, 1) == (0, 1)         # no tap reads the input: one kept, zeros


def test_plan_is_a_snapshot():
    net = randomize(build("resnet18-cifar", 3, 10, input_size=8), seed=0)
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    plan = prepare(net)
    before = plan(x)
    net.state_dict()["conv1.weight"][...] *= 2            # a change after prepare ...
    np.testing.assert_array_equal(plan(x), before)       # ... is not seen by the plan
    _close(prepare(net)(x), net(x))                       # prepare again: it is


def test_plan_runs_graphs_clips_and_table_layers():
    g = Graph([("c1", ["input"], Conv2d(2, 4, 3, padding=1)), ("bn", ["c1"], BatchNorm2d(4)),
               ("r1", ["bn"], Clip(0.0, 6.0)), ("short", ["input"], Conv2d(2, 4, 1)),
               ("sum", ["r1", "short"], None), ("r2", ["sum"], ReLU())])
    body = Sequential([("g", g), ("pool", GlobalAvgPool2d()), ("flat", Flatten()), ("fc", Linear(4, 3))])
    net = randomize(Network(body, (2, 8, 8)), seed=1)
    x = np.random.default_rng(3).standard_normal((4, 2, 8, 8)).astype(np.float32)
    _close(prepare(net)(x), net(x))
    tables = tabconv_np.load(os.path.join(HERE, "data", "lenet_tables_v0.h5"))
    xt = np.random.default_rng(4).standard_normal((3,) + tables.input_shape).astype(np.float32)
    _close(prepare(tables)(xt), tables(xt))


def test_plan_propagates_nan_and_refuses_bad_shapes():
    net = tabconv_np.load(os.path.join(WEIGHTS, "resnet18-paper_fashion-mnist.h5"))
    plan = prepare(net)
    x = np.zeros((2,) + net.input_shape, np.float32)
    x[1, 0, 3, 3] = np.nan
    y = plan(x)
    assert np.isfinite(y[0]).all() and np.isnan(y[1]).all()
    with pytest.raises(ShapeError, match="1, 28, 28"):
        plan(np.zeros((1, 3, 28, 28), np.float32))


def _tree_network(seed=0):
    """A small ResNet, BN folded (as conversion leaves it), whose convolutions but the stem are
    hash-tree layers fitted on random rows."""
    from tabconv_np.hashtree import fit_trees
    from tabconv_np.structure import map_leaves
    from tabconv_np.tree_tables import TreeConv2d
    rng = np.random.default_rng(seed)
    net = tabconv_np.fold_batchnorm(randomize(build("resnet18-cifar", 3, 10, input_size=8), seed=seed))

    def to_tree(name, m):
        if not isinstance(m, Conv2d) or name == "conv1":
            return m
        D = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
        return TreeConv2d.from_conv(m, fit_trees(rng.standard_normal((64, D)).astype(np.float32),
                                                 m.in_channels))
    return Network(map_leaves(net.body, to_tree), net.input_shape, meta={"arch": "trees"})


def test_plan_runs_tree_layers_with_their_epilogue_fused_bitwise():
    from tabconv_np.plan import PreparedTree
    net = _tree_network()
    plan = prepare(net)
    x = np.random.default_rng(5).standard_normal((3, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(plan(x), net(x))       # integer sums, the same float steps
    assert sum(isinstance(c, PreparedTree) for c in plan.prepared) == 19
    assert sum(c.act[0] == 0 for c in plan.prepared) == 17    # ReLUs and block sums fused
    x[1, 0, 2, 2] = np.inf
    y = plan(x)
    assert np.isfinite(y[[0, 2]]).all() and np.isnan(y[1]).all()



def test_tuned_plan_picks_per_layer_methods_and_keeps_the_predictions():
    from tabconv_np.data import load_dataset
    net = tabconv_np.load(os.path.join(WEIGHTS, "resnet18-paper_fashion-mnist.h5"))
    plan = prepare(net, batch=8)
    methods = {p.method for p in plan.prepared}
    assert methods <= {"im2col", "winograd", "winograd4"} and "im2col" in methods
    x, _ = load_dataset("sample", "test", limit=64)
    xn = net.normalize(x)
    want = net(xn)
    assert np.mean(plan(xn).argmax(1) == want.argmax(1)) == 1.0
    _close(plan(xn), want)


def test_an_attached_plan_runs_the_network_until_parameters_change():
    net = randomize(build("resnet18-cifar", 3, 10, input_size=8), seed=4)
    x = np.random.default_rng(6).standard_normal((2, 3, 8, 8)).astype(np.float32)
    want = net(x)
    plan = prepare(net, attach=True)
    assert net.plan is plan
    _close(net(x), want)
    _close(net.predict(np.zeros((2, 3, 8, 8), np.uint8)), net.unprepare().predict(np.zeros((2, 3, 8, 8), np.uint8)))
    prepare(net, attach=True)
    state = {k: v * 2 if k == "fc.bias" else v for k, v in net.state_dict().items()}
    net.load_state_dict(state)                           # drops the plan: the new bias is seen
    assert net.plan is None
    _close(net(x), want + net.state_dict()["fc.bias"] / 2)


def test_winograd_on_a_kernel_trimmed_to_3x3():
    """A 5x5 convolution, padding 2, on a 2x2 map keeps its middle 3x3 taps: Winograd applies to those."""
    from tabconv_np.reference import conv_epilogue_naive
    rng = np.random.default_rng(7)
    w = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    x = rng.standard_normal((2, 2, 2, 3)).astype(np.float32)
    for method in ("winograd", "winograd4"):
        conv = PreparedConv(w, None, (1, 1), (2, 2, 2, 2), (1, 1), (3, 2, 2), method=method)
        assert conv.kernel == (3, 3)
        want = conv_epilogue_naive(x, w, None, 1, 2, 1, None, -np.inf, np.inf)
        np.testing.assert_allclose(conv(x), want, rtol=1e-4, atol=1e-4)
