"""Importing Keras files written with h5py in the Keras 2 (.h5) and Keras 3 (.weights.h5,
.keras) layouts -- no TensorFlow here -- against a NumPy forward pass in channels-last order."""
import io
import json
import warnings
import zipfile

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tabconv_np
from tabconv_np.cli import main
from tabconv_np.errors import ConfigError, ShapeError, WeightFileError
from tabconv_np.importers import import_model
from tabconv_np.importers.keras import snake_case
from tabconv_np.layers import BatchNorm2d
from helpers import check_damaged, mutate

RNG = np.random.default_rng(0)

# (class, config, weights in Keras order) -- a channels-last CNN on 10x10x3 images
INPUT = (10, 10, 3)


def _layers(seed=0, final="softmax"):
    r = np.random.default_rng(seed)
    f32 = lambda *s, scale=0.3: (r.normal(0, scale, s)).astype(np.float32)  # noqa: E731
    bn = [1 + f32(4, scale=0.2), f32(4, scale=0.2), f32(4, scale=0.2),
          r.uniform(0.001, 0.01, 4).astype(np.float32)]      # small variances: eps matters
    return [
        ("Conv2D", {"name": "conv2d", "filters": 4, "kernel_size": [3, 3], "strides": [1, 1],
                    "padding": "same", "dilation_rate": [1, 1], "activation": "relu", "use_bias": True,
                    "data_format": "channels_last"}, [f32(3, 3, 3, 4), f32(4, scale=0.1)]),
        ("BatchNormalization", {"name": "batch_normalization", "axis": -1, "epsilon": 0.001,
                                "center": True, "scale": True}, bn),
        ("MaxPooling2D", {"name": "max_pooling2d", "pool_size": [2, 2], "strides": [2, 2],
                          "padding": "valid"}, []),
        ("Conv2D", {"name": "conv2d_1", "filters": 6, "kernel_size": [3, 3], "strides": [2, 2],
                    "padding": "same", "activation": "linear", "use_bias": True}, [f32(3, 3, 4, 6), f32(6, scale=0.1)]),
        ("ReLU", {"name": "re_lu", "max_value": None}, []),
        ("Flatten", {"name": "flatten", "data_format": "channels_last"}, []),
        ("Dense", {"name": "dense", "units": 8, "activation": "relu"}, [f32(54, 8), f32(8, scale=0.1)]),
        ("Dropout", {"name": "dropout", "rate": 0.5}, []),
        ("Dense", {"name": "dense_1", "units": 5, "activation": final}, [f32(8, 5), f32(5, scale=0.1)]),
    ]


# --- a NumPy forward pass in Keras' own (channels-last) terms ---------------------------------------
def _same_pads(n, k, s):
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _conv_nhwc(x, kernel, bias, stride, padding):
    kh, kw = kernel.shape[:2]
    if padding == "same":
        (t, b), (l, r) = _same_pads(x.shape[1], kh, stride), _same_pads(x.shape[2], kw, stride)
        x = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))
    ho, wo = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    y = np.zeros((x.shape[0], ho, wo, kernel.shape[3]))
    for i in range(ho):
        for j in range(wo):
            patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            y[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, kernel)
    return y + bias


def _keras_forward(layers, x_nhwc):
    x = x_nhwc.astype(np.float64)
    for cls, cfg, w in layers:
        if cls == "Conv2D":
            x = _conv_nhwc(x, w[0], w[1], cfg["strides"][0], cfg["padding"])
        elif cls == "BatchNormalization":
            g, b, m, v = w
            x = (x - m) / np.sqrt(v + cfg["epsilon"]) * g + b
        elif cls in ("MaxPooling2D", "AveragePooling2D"):
            k = cfg["pool_size"][0]
            n, h, wd, c = x.shape
            x = x[:, :h // k * k, :wd // k * k].reshape(n, h // k, k, wd // k, k, c)
            x = x.max(axis=(2, 4)) if cls == "MaxPooling2D" else x.mean(axis=(2, 4))
        elif cls == "GlobalAveragePooling2D":
            x = x.mean(axis=(1, 2))
        elif cls == "ReLU":
            x = np.maximum(x, 0) if cfg.get("max_value") is None else np.clip(x, 0, cfg["max_value"])
        elif cls == "Flatten":
            x = x.reshape(len(x), -1)          # H, W, C order
        elif cls == "Dense":
            x = x @ w[0] + w[1]
        if cfg.get("activation") == "relu":
            x = np.maximum(x, 0)
    return x


# --- writing the files (the layouts Keras writes) ------------------------------------------------------
def _keras2_config(layers, functional=False):
    body = [{"class_name": "InputLayer", "config": {"batch_input_shape": [None, *INPUT], "name": "input_1"}}]
    body += [{"class_name": c, "config": cfg} for c, cfg, _ in layers]
    if functional:          # Keras 2 functional form: every layer names the layer it is called on
        for prev, layer in zip(body, body[1:]):
            layer["name"] = layer["config"]["name"]
            layer["inbound_nodes"] = [[[prev["config"]["name"], 0, 0, {}]]]
        body[0]["inbound_nodes"] = []
    return {"class_name": "Functional" if functional else "Sequential",
            "config": {"name": "model", "layers": body}, "keras_version": "2.13.1", "backend": "tensorflow"}


_K2_NAMES = {"Conv2D": ["kernel", "bias"], "Dense": ["kernel", "bias"],
             "BatchNormalization": ["gamma", "beta", "moving_mean", "moving_variance"]}


def _write_keras2(path, layers, with_config=True, config=None):
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if with_config else f
        if with_config:
            f.attrs["model_config"] = json.dumps(config or _keras2_config(layers))
            f.attrs["keras_version"] = "2.13.1"
        root.attrs["layer_names"] = np.array([cfg["name"].encode() for _, cfg, _ in layers])
        for cls, cfg, ws in layers:
            g = root.create_group(cfg["name"])
            names = [f"{cfg['name']}/{n}:0" for n in _K2_NAMES.get(cls, [])]
            g.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
            for n, w in zip(names, ws):
                g.create_dataset(n, data=w)
    return str(path)


def _write_keras3_weights(target, layers):
    with h5py.File(target, "w") as f:
        f.create_group("vars")
        used = {}
        for cls, cfg, ws in layers:
            base = snake_case(cls)
            used[base] = used.get(base, -1) + 1
            g = f.create_group(f"layers/{base}{'_%d' % used[base] if used[base] else ''}/vars")
            for i, w in enumerate(ws):
                g.create_dataset(str(i), data=w)
        f.create_group("optimizer/vars")


def _write_keras3_zip(path, layers):
    body = [{"module": "keras.layers", "class_name": "InputLayer",
             "config": {"batch_shape": [None, *INPUT], "name": "input_layer"}}]
    body += [{"module": "keras.layers", "class_name": c, "config": dict(cfg, name=f"my_{cfg['name']}")}
             for c, cfg, _ in layers]   # user-chosen layer names; the weights file uses class names
    cfg = {"module": "keras", "class_name": "Sequential", "config": {"name": "seq", "layers": body},
           "build_config": {"input_shape": [None, *INPUT]}}
    buf = io.BytesIO()
    _write_keras3_weights(buf, layers)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.3.3"}))
        zf.writestr("config.json", json.dumps(cfg))
        zf.writestr("model.weights.h5", buf.getvalue())
    return str(path)


SPEC = {"input": [3, 10, 10], "layers": [
    {"type": "conv", "key": "conv2d", "padding": "same"}, {"type": "relu"},
    {"type": "bn", "key": "batch_normalization"},
    {"type": "maxpool", "kernel": 2},
    {"type": "conv", "key": "conv2d_1", "stride": 2, "padding": "same"}, {"type": "relu"},
    {"type": "flatten"},
    {"type": "linear", "key": "dense"}, {"type": "relu"},
    {"type": "linear", "key": "dense_1"}]}


@pytest.fixture(scope="module")
def data():
    x = RNG.normal(size=(3, *INPUT)).astype(np.float32)            # NHWC
    layers = _layers()
    return layers, x, _keras_forward(layers, x)


def _check(net, x_nhwc, ref):
    np.testing.assert_allclose(net(x_nhwc.transpose(0, 3, 1, 2)), ref, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(net(x_nhwc, layout="NHWC"), ref, atol=1e-4, rtol=1e-4)


def test_keras2_h5_model(data, tmp_path):
    layers, x, ref = data
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        net = import_model(_write_keras2(tmp_path / "m.h5", layers))
    assert any("softmax" in str(m.message) for m in w) and net.meta["dropped_softmax"]
    assert net.input_shape == (3, 10, 10)
    assert [m.eps for m in net.body.children.values() if isinstance(m, BatchNorm2d)] == [0.001]
    _check(net, x, ref)


def test_keras3_dot_keras_archive(data, tmp_path):
    layers, x, ref = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = import_model(_write_keras3_zip(tmp_path / "m.keras", layers))
    assert net.meta["source_format"] == "keras-zip"
    _check(net, x, ref)


def test_keras3_weights_only_needs_a_spec(data, tmp_path):
    layers, x, ref = data
    path = str(tmp_path / "m.weights.h5")
    _write_keras3_weights(path, layers)
    with pytest.raises(ConfigError, match="--spec.*conv2d, conv2d_1, dense, dense_1"):
        import_model(path)
    net = import_model(path, spec=SPEC)
    _check(net, x, ref)
    bn = [m for m in net.body.children.values() if isinstance(m, BatchNorm2d)]
    assert bn[0].eps == 1e-3           # Keras' default epsilon when the spec gives none


def test_keras2_weights_only_with_spec_and_cli(data, tmp_path, capsys):
    layers, x, ref = data
    src = _write_keras2(tmp_path / "w.h5", layers, with_config=False)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    out = str(tmp_path / "out.h5")
    assert main(["import", src, "-o", out]) == 2
    assert "holds weights only" in capsys.readouterr().err
    assert main(["import", src, "-o", out, "--spec", str(spec)]) == 0
    _check(tabconv_np.load(out), x, ref)


def test_cli_keras2_model(data, tmp_path, capsys):
    layers, x, ref = data
    src = _write_keras2(tmp_path / "m.h5", layers)
    out = str(tmp_path / "out.h5")
    assert main(["import", src, "-o", out, "--classes", "5"]) == 0
    assert "final softmax" in capsys.readouterr().err
    _check(tabconv_np.load(out), x, ref)


def test_functional_models(data, tmp_path):
    layers, x, ref = data
    cfg = _keras2_config(layers, functional=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _check(import_model(_write_keras2(tmp_path / "f.h5", layers, config=cfg)), x, ref)
    cfg["config"]["layers"][5]["inbound_nodes"] = [[["batch_normalization", 0, 0, {}]]]   # a skip
    # (graphs import now; this one skips two layers, so the Dense after it no longer fits)
    with pytest.raises(ShapeError, match="'dense.weight': expected shape \\(400,\\), found \\(54,\\)"):
        import_model(_write_keras2(tmp_path / "branch.h5", layers, config=cfg))


def test_gap_relu6_avgpool_asymmetric_same_and_epsilon(tmp_path):
    r = np.random.default_rng(3)
    f32 = lambda *s: r.normal(0, 0.3, s).astype(np.float32)  # noqa: E731
    layers = [
        ("Conv2D", {"name": "c", "filters": 4, "kernel_size": [3, 3], "strides": [2, 2], "padding": "same",
                    "activation": "linear"}, [f32(3, 3, 3, 4), f32(4)]),     # 10 -> 5: pads (0, 1)
        ("BatchNormalization", {"name": "bn", "epsilon": 0.01}, [1 + f32(4), f32(4), f32(4),
                                                                 r.uniform(0.001, 0.02, 4).astype(np.float32)]),
        ("ReLU", {"name": "r6", "max_value": 6.0}, []),
        ("AveragePooling2D", {"name": "ap", "pool_size": [2, 2], "strides": [2, 2], "padding": "valid"}, []),
        ("GlobalAveragePooling2D", {"name": "gap"}, []),
        ("Dense", {"name": "out", "units": 3, "activation": "linear"}, [f32(4, 3), f32(3)]),
    ]
    x = RNG.normal(size=(2, *INPUT)).astype(np.float32) * 3
    net = import_model(_write_keras2(tmp_path / "g.h5", layers))
    assert [m.eps for m in net.body.children.values() if isinstance(m, BatchNorm2d)] == [0.01]
    _check(net, x, _keras_forward(layers, x))


def test_unsupported_and_mismatched(tmp_path):
    layers = _layers(final="linear")
    bad = list(layers)
    bad[4] = ("LSTM", {"name": "lstm"}, [])
    with pytest.raises(ConfigError, match="unsupported Keras layer LSTM \\('lstm'\\)"):
        import_model(_write_keras2(tmp_path / "lstm.h5", bad))
    bad = list(layers)
    bad[6] = ("Dense", dict(layers[6][1]), [np.zeros((50, 8), np.float32), np.zeros(8, np.float32)])
    with pytest.raises(ShapeError, match=r"dense.weight': expected shape \(54,\), found \(50,\)"):
        import_model(_write_keras2(tmp_path / "shape.h5", bad))
    bad = list(layers)
    bad[0] = ("Conv2D", dict(layers[0][1], activation="gelu"), layers[0][2])   # (tanh is supported now)
    with pytest.raises(ConfigError, match="activation 'gelu'"):
        import_model(_write_keras2(tmp_path / "tanh.h5", bad))
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(WeightFileError, match="neither a tabconv_np file nor a Keras model"):
        import_model(str(tmp_path / "other.h5"))


# --- corrupt files ----------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["keras2", "keras3"])
def test_damaged_keras_files_raise_project_errors(data, tmp_path_factory, layout):
    layers, _, _ = data
    d = tmp_path_factory.mktemp(f"fuzz_{layout}")
    src = d / "src.h5"
    if layout == "keras2":
        _write_keras2(src, layers)
        kw = {}
    else:
        _write_keras3_weights(src, layers)
        kw = {"spec": SPEC}
    blob = src.read_bytes()
    n, path = len(blob), str(d / "damaged.h5")

    @settings(max_examples=50, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def run(data):
        pos = st.one_of(st.integers(0, min(n, 4096) - 1), st.integers(0, n - 1))
        check_damaged(path, mutate(data, blob, pos), ignore_warnings=True, **kw)

    run()
