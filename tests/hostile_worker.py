"""A child process for tests/test_hostile.py: loads one untrusted file per request, under a memory cap.

Run as ``python hostile_worker.py``.  Reads one JSON request a line on stdin,
``{"kind": "load" | "import" | "torch" | "pickle", "path": ...}``, and answers one
JSON line on stdout:

* ``{"outcome": "error", "type": ..., "message": ...}``: the project's error;
* ``{"outcome": "ok", "digest": ..., "resaved": ...}``: loaded; the digest of
  the outputs on a fixed input (of the arrays for ``torch``), and whether saving
  and loading the network again gives the same outputs;
* ``{"outcome": "raw", "type": ..., "message": ...}``: anything else (a bug).

A crash ends the process; the test sees the pipe close.  Memory is capped
with RLIMIT_AS (``TABCONV_WORKER_MEMORY`` bytes, default 3 GiB), so an
allocation before validation shows as a MemoryError, not a swapping machine.
"""
import hashlib
import json
import os
import resource
import sys
import tempfile
import warnings

LIMIT = int(os.environ.get("TABCONV_WORKER_MEMORY", 3 << 30))
resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))

import numpy as np  # noqa: E402

import tabconv_np  # noqa: E402
from tabconv_np.errors import TabConvError  # noqa: E402


def outputs(net):
    x = np.random.default_rng(0).normal(size=(2,) + tuple(net.input_shape)).astype(np.float32)
    return net(x)


def run(req):
    from tabconv_np.importers import import_model
    from tabconv_np.importers.torch_pickle import read_torch
    kind, path = req["kind"], req["path"]
    if kind == "torch":
        state = read_torch(path)
        h = hashlib.sha256()
        for k, v in state.items():
            h.update(k.encode() + str(v.dtype).encode() + str(v.shape).encode() + v.tobytes())
        return {"digest": h.hexdigest(), "resaved": True}
    if kind == "pickle":
        from tabconv_np.data import restricted_pickle_load
        with open(path, "rb") as f:
            restricted_pickle_load(f.read(), path)
        return {"digest": "", "resaved": True}
    net = tabconv_np.load(path) if kind == "load" else import_model(path, **req.get("kw", {}))
    y = outputs(net)
    with tempfile.TemporaryDirectory() as d:
        tabconv_np.save(net, os.path.join(d, "again.h5"))
        again = outputs(tabconv_np.load(os.path.join(d, "again.h5")))
    return {"digest": hashlib.sha256(y.tobytes()).hexdigest(),
            "resaved": bool(np.array_equal(y, again, equal_nan=True))}


def main():
    warnings.simplefilter("ignore")
    for line in sys.stdin:
        req = json.loads(line)
        try:
            answer = dict(outcome="ok", **run(req))
        except TabConvError as e:
            answer = {"outcome": "error", "type": type(e).__name__, "message": str(e)[:500]}
        except BaseException as e:  # noqa: BLE001 - reported to the test as a finding
            answer = {"outcome": "raw", "type": type(e).__name__, "message": str(e)[:500]}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
