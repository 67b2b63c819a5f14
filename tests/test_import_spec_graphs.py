"""Spec entries for graph-shaped models (concat, mul, prelu, ceil-mode and padded pooling,
depthwise conv, the new activations, several outputs), imported from a torch state_dict and
checked against torch itself within 1e-4 relative."""
import json
import os
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tabconv_np.blocks import Graph  # noqa: E402
from tabconv_np.errors import ConfigError  # noqa: E402
from tabconv_np.importers.spec import build_from_spec  # noqa: E402

nn, F = torch.nn, torch.nn.functional


class Net(nn.Module):
    """A Fire module (concat), a depthwise conv with PReLU, a squeeze-excite gate (mul), LRN,
    a zero pad, ceil-mode max pooling, and two heads (softmax scores, boxes): the module of
    docs/import_spec.md's worked example."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2)
        self.prelu = nn.PReLU(8)
        self.sq, self.e1, self.e3 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 6, 1), nn.Conv2d(4, 6, 3, padding=1)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.fc1, self.fc2 = nn.Conv2d(12, 3, 1), nn.Conv2d(3, 12, 1)
        self.score, self.box = nn.Linear(12, 5), nn.Conv2d(12, 4, 1)

    def forward(self, x):
        x = F.max_pool2d(self.prelu(self.stem(x)), 3, 2, ceil_mode=True)
        s = F.relu(self.sq(x))
        x = torch.cat([F.relu(self.e1(s)), F.relu(self.e3(s))], 1)
        x = F.hardswish(self.dw(F.pad(x, (0, 1, 0, 1))))
        g = F.hardsigmoid(self.fc2(F.leaky_relu(self.fc1(F.adaptive_max_pool2d(x, 1)), 0.1)))
        x = F.local_response_norm(x * g, 3)
        scores = F.softmax(self.score(torch.tanh(F.adaptive_avg_pool2d(x, 1).flatten(1))), 1)
        return scores, torch.sigmoid(self.box(x))


def _doc_spec():
    """The worked example of docs/import_spec.md ("Names and graphs"): its JSON block with "outputs"."""
    text = open(os.path.join(os.path.dirname(__file__), "..", "docs", "import_spec.md"), encoding="utf-8").read()
    blocks = [b for b in re.findall(r"```json\n(.*?)```", text, re.S) if '"outputs"' in b]
    assert len(blocks) == 1
    return json.loads(blocks[0])


SPEC = _doc_spec()


def test_graph_spec_matches_torch():
    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():
        model.prelu.weight.uniform_(0, 0.5)
    net = build_from_spec(SPEC, model.state_dict())
    assert isinstance(net.body, Graph) and net.body.outputs and len(net.body.outputs) == 2
    x = np.random.default_rng(0).normal(size=(2, 3, 29, 31)).astype(np.float32)
    with torch.no_grad():
        refs = [t.numpy() for t in model(torch.from_numpy(x))]
    for got, ref in zip(net(x), refs):
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_graph_spec_refusals():
    state = Net().state_dict()
    bad = dict(SPEC, layers=SPEC["layers"][:9] + [{"type": "concat", "inputs": ["a"]}])
    with pytest.raises(ConfigError, match="'concat' needs 'inputs'"):
        build_from_spec(bad, state)
    with pytest.raises(ConfigError, match="'outputs' must be a list"):
        build_from_spec(dict(SPEC, outputs="scores"), state)
    with pytest.raises(ConfigError, match="needs a 'key'"):
        build_from_spec(dict(SPEC, layers=[{"type": "prelu"}]), state)


def test_no_spec_error_lists_every_tensor_by_layer():
    from tabconv_np.importers.statedict import network_from_state_dict
    state = Net().state_dict()
    with pytest.raises(ConfigError) as err:
        network_from_state_dict(state)
    msg = str(err.value)
    assert "--spec" in msg and "  e3: weight (6, 4, 3, 3), bias (6,)" in msg and "  prelu: weight (8,)" in msg
    assert all(k.rpartition(".")[0] in msg for k in state) and msg.count("\n") == len({k.rpartition(".")[0] for k in state})


@pytest.mark.parametrize("order", ["hwc", "whc", "cwh"])
def test_flatten_orders(order):
    """A Linear after a map flattened in any axis order (``x.permute(...).flatten(1)``)."""
    torch.manual_seed(1)
    conv, fc = nn.Conv2d(2, 3, 3), nn.Linear(3 * 4 * 5, 6)
    perm = [0] + [1 + "chw".index(a) for a in order]

    def forward(x):
        return fc(conv(x).permute(*perm).flatten(1))

    state = {k: v.detach().numpy() for k, v in
             {"conv.weight": conv.weight, "conv.bias": conv.bias, "fc.weight": fc.weight, "fc.bias": fc.bias}.items()}
    spec = {"input": [2, 6, 7], "layers": [{"type": "conv", "key": "conv"}, {"type": "flatten", "order": order},
                                           {"type": "linear", "key": "fc"}]}
    net = build_from_spec(spec, state)
    x = np.random.default_rng(2).normal(size=(2, 2, 6, 7)).astype(np.float32)
    with torch.no_grad():
        ref = forward(torch.from_numpy(x)).numpy()
    assert np.abs(net(x) - ref).max() <= 1e-4 * np.abs(ref).max()
    with pytest.raises(ConfigError, match="permutation of 'chw'"):
        build_from_spec(dict(spec, layers=[spec["layers"][0], {"type": "flatten", "order": "hw"}]), state)


def _bottleneck(p, stride, down, inp):
    """Spec entries of test_import_vision.Bottleneck at state-dict prefix ``p``."""
    e = [{"type": "conv", "key": f"{p}.body.0.0", "inputs": [inp]}, {"type": "bn", "key": f"{p}.body.0.1"},
         {"type": "relu"}, {"type": "conv", "key": f"{p}.body.1.0", "stride": stride, "padding": 1},
         {"type": "bn", "key": f"{p}.body.1.1"}, {"type": "relu"}, {"type": "conv", "key": f"{p}.body.2.0"},
         {"type": "bn", "key": f"{p}.body.2.1", "name": f"{p}_main"}]
    if down:
        e += [{"type": "conv", "key": f"{p}.down.0", "stride": stride, "inputs": [inp]},
              {"type": "bn", "key": f"{p}.down.1", "name": f"{p}_short"}]
    return e + [{"type": "add", "inputs": [f"{p}_main", f"{p}_short" if down else inp]},
                {"type": "relu", "name": f"{p}_out"}]


def _fire(p, inp):
    return [{"type": "conv", "key": f"{p}.sq", "inputs": [inp]}, {"type": "relu", "name": f"{p}_s"},
            {"type": "conv", "key": f"{p}.e1", "inputs": [f"{p}_s"]}, {"type": "relu", "name": f"{p}_a"},
            {"type": "conv", "key": f"{p}.e3", "padding": 1, "inputs": [f"{p}_s"]}, {"type": "relu", "name": f"{p}_b"},
            {"type": "concat", "inputs": [f"{p}_a", f"{p}_b"], "name": f"{p}_out"}]


def _inverted(p, stride, res, inp):
    e = [{"type": "conv", "key": f"{p}.body.0.0", "inputs": [inp]}, {"type": "bn", "key": f"{p}.body.0.1"},
         {"type": "relu6"}, {"type": "conv", "key": f"{p}.body.1.0", "stride": stride, "padding": 1,
                             "groups": "depthwise"},
         {"type": "bn", "key": f"{p}.body.1.1"}, {"type": "relu6"}, {"type": "conv", "key": f"{p}.body.2.0"},
         {"type": "bn", "key": f"{p}.body.2.1", "name": f"{p}_main"}]
    return e + ([{"type": "add", "inputs": [inp, f"{p}_main"], "name": f"{p}_out"}] if res
                else [{"type": "identity", "name": f"{p}_out"}])


def _family_specs():
    import vision_models as vision
    stem = [{"type": "conv", "key": "0", "stride": 2, "padding": 3}, {"type": "bn", "key": "1"}, {"type": "relu"},
            {"type": "maxpool", "kernel": 3, "stride": 2, "padding": 1, "name": "stem"}]
    resnet = stem + _bottleneck("4", 1, True, "stem") + _bottleneck("5", 1, False, "4_out") + \
        _bottleneck("6", 2, True, "5_out") + [{"type": "gap"}, {"type": "flatten"}, {"type": "linear", "key": "9"}]
    squeeze = [{"type": "conv", "key": "0", "stride": 2}, {"type": "relu"},
               {"type": "maxpool", "kernel": 3, "stride": 2, "ceil_mode": True, "name": "p0"}] + \
        _fire("3", "p0") + _fire("4", "3_out") + [{"type": "maxpool", "kernel": 3, "stride": 2, "ceil_mode": True,
                                                   "name": "p1"}] + \
        _fire("6", "p1") + [{"type": "dropout"}, {"type": "conv", "key": "8"}, {"type": "relu"}, {"type": "gap"},
                            {"type": "flatten"}]
    mobile = [{"type": "conv", "key": "0.0", "stride": 2, "padding": 1}, {"type": "bn", "key": "0.1"},
              {"type": "relu6", "name": "stem"}] + _inverted("1", 1, True, "stem") + \
        _inverted("2", 2, False, "1_out") + _inverted("3", 1, True, "2_out") + \
        [{"type": "conv", "key": "4.0"}, {"type": "bn", "key": "4.1"}, {"type": "relu6"}, {"type": "gap"},
         {"type": "flatten"}, {"type": "linear", "key": "8"}]
    return {"resnet50": (vision.resnet50ish, resnet), "squeezenet": (vision.squeezenet, squeeze),
            "mobilenetv2": (vision.mobilenetv2, mobile)}, vision


@pytest.mark.parametrize("family", ["resnet50", "squeezenet", "mobilenetv2"])
def test_family_state_dicts_match_torch(family):
    """The vision families' torch state_dicts, imported with graph specs, against torch itself at
    224x224 and a smaller size."""
    specs, vision = _family_specs()
    make, layers = specs[family]
    model = vision.randomize(make(), 0)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    for size, batch in ((224, 1), (64, 2)):
        net = build_from_spec({"input": [3, size, size], "layers": layers}, state)
        x = np.random.default_rng(size).normal(size=(batch, 3, size, size)).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert np.abs(net(x) - ref).max() <= 1e-4 * np.abs(ref).max()
