"""Keras 3 functional models built and saved by Keras itself (torch backend, no TensorFlow) in
``.keras`` and ``.h5`` form -- separable and depthwise convs with residual ``Add``, squeeze-excite
``Multiply``, ``Concatenate``, PReLU, LeakyReLU, zero padding, global max pooling, two outputs --
imported and checked against ``model.predict`` within 1e-4 relative, at 224x224 and at the
model's own size."""
import os
import warnings

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":      # another backend was chosen first: still fine, but say so
    pytest.skip(f"keras runs on {keras.backend.backend()}; these tests use the torch backend",
                allow_module_level=True)

import tabconv_np  # noqa: E402
from tabconv_np.blocks import Graph  # noqa: E402
from tabconv_np.importers import import_model  # noqa: E402

L = keras.layers
TOL = 1e-4


def branches(size):
    i = keras.Input((size, size, 3))
    x = L.SeparableConv2D(8, 3, padding="same", activation="relu")(i)
    y = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)
    y = L.PReLU(shared_axes=[1, 2])(y)
    a = L.Add()([y, L.Conv2D(16, 1)(x)])
    a = L.ZeroPadding2D(((0, 1), (1, 0)))(a)
    c = L.Concatenate()([L.LeakyReLU()(a), L.Activation("hard_sigmoid")(a)])
    g = L.GlobalMaxPooling2D()(c)
    return keras.Model(i, [L.Dense(4)(g), L.Dense(2, activation="sigmoid")(g)])


def separable_residual(size):
    """Xception-style: separable convs with batch norm, a strided 1x1 shortcut, a squeeze-excite
    gate, hard-swish, max and average pooling with 'same' padding."""
    i = keras.Input((size, size, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(i)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    s = L.BatchNormalization()(L.Conv2D(16, 1, strides=2, use_bias=False)(x))
    y = L.SeparableConv2D(16, 3, padding="same", use_bias=False)(x)
    y = L.BatchNormalization()(y)
    y = L.ReLU(max_value=6.0)(y)
    y = L.SeparableConv2D(16, 3, padding="same", use_bias=False)(y)
    y = L.BatchNormalization()(y)
    y = L.MaxPooling2D(3, strides=2, padding="same")(y)
    x = L.Add()([y, s])
    g = L.GlobalAveragePooling2D(keepdims=True)(x)
    g = L.Conv2D(4, 1, activation="relu")(g)
    g = L.Conv2D(16, 1, activation="sigmoid")(g)
    x = L.Multiply()([x, g])
    x = L.Activation("hard_swish")(x)
    # 'same' average pooling excludes the padding (TensorFlow's rule, which the importer follows);
    # Keras' torch backend agrees where the padding is symmetric, as here, not where it is not
    x = L.AveragePooling2D(3, strides=1, padding="same")(x)
    x = L.DepthwiseConv2D(3, activation="tanh")(x)
    x = L.Flatten()(x)
    return keras.Model(i, L.Dense(5)(x))


MODELS = {"branches": (branches, 40), "separable_residual": (separable_residual, 32)}


def _randomize(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.2, b.shape),
                               rng.normal(0, 0.2, m.shape), rng.uniform(0.5, 2.0, v.shape)])
        elif isinstance(layer, L.PReLU):
            layer.set_weights([rng.uniform(0, 0.5, w.shape) for w in layer.get_weights()])
    return model


def _rel(got, ref):
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


@pytest.mark.parametrize("form", ["keras", "h5"])
@pytest.mark.parametrize("name", list(MODELS))
def test_keras_model_matches_keras(name, form, tmp_path):
    make, own = MODELS[name]
    rng = np.random.default_rng(1)
    for size, batch in ((224, 1), (own, 2)):
        model = _randomize(make(size), 0)
        path = str(tmp_path / f"{name}_{size}.{form}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.save(path)
        net = import_model(path)
        assert net.input_shape == (3, size, size)
        x = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
        refs = model.predict(x, verbose=0)
        refs = [np.asarray(r) for r in (refs if isinstance(refs, list) else [refs])]
        got = net(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        got = list(got) if isinstance(got, tuple) else [got]
        assert len(got) == len(refs)
        for g, r in zip(got, refs):
            assert g.shape == r.shape
            assert _rel(g, r) <= TOL, (name, form, size, _rel(g, r))


def test_keras_graph_round_trips_and_names_unsupported_layer_types(tmp_path):
    model = _randomize(branches(40), 2)
    path = str(tmp_path / "b.keras")
    model.save(path)
    net = import_model(path)
    assert isinstance(net.body, Graph) and len(net.body.outputs) == 2
    tabconv_np.save(net, tmp_path / "b.h5")
    back = tabconv_np.load(tmp_path / "b.h5")
    x = np.random.default_rng(3).normal(size=(2, 3, 40, 40)).astype(np.float32)
    for a, b in zip(back(x), net(x)):
        np.testing.assert_array_equal(a, b)
    i = keras.Input((8, 8, 3))
    bad = keras.Model(i, L.Conv2DTranspose(4, 3)(L.Conv2D(4, 3)(i)))
    bad.save(str(tmp_path / "t.keras"))
    with pytest.raises(tabconv_np.errors.ConfigError,
                       match=r"unsupported Keras layer Conv2DTranspose \('conv2d_transpose'\); supported layer types: "
                             r"InputLayer, Conv2D, DepthwiseConv2D, SeparableConv2D"):
        import_model(str(tmp_path / "t.keras"))
