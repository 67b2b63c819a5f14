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
