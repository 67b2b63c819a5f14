"""Map a PyTorch state dict onto a bundled architecture, by name.

Accepted naming schemes (mixed freely):

* torchvision style, as in ``weights/models_torch.py``: ``conv1, bn1,
  layer1.0.conv1, ..., layer2.0.downsample.0/1, fc``;
* the CIFAR-repository style (``pytorch-cifar`` and its many copies):
  ``linear`` for ``fc`` and ``shortcut.0/1`` for ``downsample.0/1``;
* either wrapped by ``nn.DataParallel`` / ``DistributedDataParallel``
  (``module.`` prefix) or ``torch.compile`` (``_orig_mod.``).

``num_batches_tracked`` buffers are ignored.  ``in_channels`` and
``num_classes`` are read from the weights' shapes when not given (and
checked when given); LeNet's input size is inferred from ``fc1``.
"""
import functools
from collections import OrderedDict

import numpy as np

from ..errors import ConfigError, ShapeError
from ..models import ARCHS, build
from ..network import Network

_PREFIXES = ("module.", "_orig_mod.", "model.", "net.")
#: per architecture: (key whose dim 1 is in_channels, key whose dim 0 is num_classes)
_IO_KEYS = {"nin": ("conv1.weight", "conv9.weight"), "lenet": ("conv1.weight", "fc3.weight")}


def tensor_listing(state):
    """Every tensor of ``state``, one line per prefix (the layer): ``  features.0: weight (8, 1, 3, 3),
    bias (8,)``, in the state's order."""
    groups = {}
    for k, v in state.items():
        prefix, _, name = k.rpartition(".")
        groups.setdefault(prefix, []).append(f"{name} {tuple(np.shape(v))}")
    return "\n".join(f"  {p or '(top level)'}: {', '.join(items)}" for p, items in groups.items())


def clean_state(state):
    """Drop ``num_batches_tracked``; strip ``module.`` (per key) and wrapper prefixes shared by all keys."""
    keys = [k for k in state if not k.endswith("num_batches_tracked")]
    out = OrderedDict()
    for k in keys:
        out[k[len("module."):] if k.startswith("module.") else k] = state[k]
    changed = True
    while changed and out:
        changed = False
        for p in _PREFIXES:
            if all(k.startswith(p) for k in out):
                out = OrderedDict((k[len(p):], v) for k, v in out.items())
                changed = True
    return out


def rename_cifar_style(state):
    """``linear.*`` -> ``fc.*`` and ``*.shortcut.*`` -> ``*.downsample.*``."""
    out = OrderedDict()
    for k, v in state.items():
        if k.startswith("linear."):
            k = "fc." + k[len("linear."):]
        k = k.replace(".shortcut.", ".downsample.")
        out[k] = v
    return out


@functools.lru_cache(maxsize=None)
def _arch_keys(arch):
    return frozenset(build(arch, 3, 10).state_dict())


def guess_archs(state):
    """The bundled architectures whose key set matches ``state`` (cleaned and renamed)."""
    keys = set(state)
    return [arch for arch in ARCHS if _arch_keys(arch) == keys]


def _io_keys(arch):
    return _IO_KEYS.get(arch, ("conv1.weight", "fc.weight"))


def _shape_of(state, key, where):
    if key not in state:
        raise ShapeError(f"the weights have no tensor {key!r}, which {where} needs")
    return np.shape(state[key])


def network_from_state_dict(state, arch=None, in_channels=None, num_classes=None, input_shape=None):
    """A bundled network (``arch``) filled from a PyTorch state dict.

    Parameters
    ----------
    state : dict name -> array
    arch : str, optional
        One of ``tabconv_np.models.ARCHS``; guessed from the keys when None and
        only one architecture fits (ResNet "cifar" and "paper" variants have the
        same keys, so those need ``arch``).
    in_channels, num_classes : int, optional
        Checked against the weights when given, read from them otherwise.
    input_shape : (C, H, W), optional
        Default 1x28x28 for one channel, else Cx32x32 (LeNet: inferred from fc1).

    Raises
    ------
    ConfigError
        Unknown or ambiguous architecture.
    ShapeError
        A tensor is missing, unexpected or of the wrong shape (the message
        names the key and the expected and found shapes).
    """
    state = rename_cifar_style(clean_state(state))
    if arch is None:
        found = guess_archs(state)
        if len(found) != 1:
            if found:
                raise ConfigError(f"the weights fit {' and '.join(found)} (they differ only in strides); "
                                  f"choose one with --arch")
            raise ConfigError("the weights match none of the bundled architectures "
                              f"({', '.join(ARCHS)}); describe the model with --spec "
                              f"(see docs/import_spec.md). The file's tensors, by layer:\n"
                              f"{tensor_listing(state)}")
        arch = found[0]
    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    in_key, out_key = _io_keys(arch)
    c_found = _shape_of(state, in_key, arch)
    k_found = _shape_of(state, out_key, arch)
    if len(c_found) != 4 or len(k_found) < 2:
        raise ShapeError(f"tensor {in_key!r} has shape {c_found} and {out_key!r} has shape {k_found}; "
                         f"these are not the weights of {arch}")
    if input_shape is not None:
        input_shape = tuple(int(v) for v in input_shape)
        if in_channels is not None and in_channels != input_shape[0]:
            raise ConfigError(f"--input has {input_shape[0]} channels but in_channels is {in_channels}")
        in_channels = input_shape[0]
    if in_channels is not None and in_channels != c_found[1]:
        raise ShapeError(f"tensor {in_key!r}: expected shape {(c_found[0], in_channels) + c_found[2:]} "
                         f"for {in_channels} input channel(s), found {c_found}")
    if num_classes is not None and num_classes != k_found[0]:
        raise ShapeError(f"tensor {out_key!r}: expected {num_classes} output rows for {num_classes} "
                         f"classes, found shape {k_found}")
    c, classes = int(c_found[1]), int(k_found[0])
    if input_shape is None:
        size = 28 if c == 1 else 32
        if arch == "lenet" and "fc1.weight" in state:
            size = _lenet_size(np.shape(state["fc1.weight"]), size)
        input_shape = (c, size, size)
    net = build(arch, c, classes, input_shape[1])
    if input_shape[1] != input_shape[2]:
        net = Network(net.body, input_shape, meta=net.meta)
    load_checked(net, state, arch)
    return net


def _lenet_size(fc1_shape, default):
    """The input side that gives LeNet's fc1 ``fc1_shape[1]`` inputs (16 * m * m)."""
    if len(fc1_shape) != 2:
        return default
    fits = [n for n in range(8, 1025) if 16 * (((n // 2) - 4) // 2) ** 2 == fc1_shape[1]]
    if not fits or default in fits:
        return default
    return min(fits, key=lambda n: (n % 4 != 0, n))


def load_checked(net, state, arch="the network"):
    """Copy ``state`` into ``net`` with messages that name the key and the shapes."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing:
        raise ShapeError(f"the weights lack {len(missing)} tensor(s) that {arch} needs, e.g. "
                         f"{', '.join(missing[:4])}; check --arch (or describe the model with --spec)")
    if extra:
        raise ShapeError(f"the weights have {len(extra)} tensor(s) that {arch} does not use, e.g. "
                         f"{', '.join(extra[:4])}; check --arch (or describe the model with --spec)")
    for k, p in own.items():
        v = np.asarray(state[k])
        if v.shape != p.shape:
            raise ShapeError(f"tensor {k!r}: expected shape {p.shape} for {arch}, found {v.shape}")
        if v.dtype.kind not in "fiu":
            raise ShapeError(f"tensor {k!r} has dtype {v.dtype}, expected numbers")
        p[...] = v.astype(p.dtype, copy=False)
    return net
