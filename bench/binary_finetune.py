"""A short straight-through-estimator fine-tune of the shipped ResNet-18 for the binary and ternary methods.

Usage (torch is an offline extra; 1 thread, a few minutes per setting)::

    python bench/binary_finetune.py [--steps 250] [--batch 64] [--lr 5e-4] [--calib 500] [--out docs/binary_finetune.md]

For each setting (``--settings``, default binary weights, and binary weights
and inputs; ``ternary/float``, ``ternary/binary`` also run), the torch twin of the shipped ResNet-18
"paper" (``weights/models_torch.py``) is trained for ``--steps`` Adam steps
with the layers ``convert`` would binarise computing, in the forward pass,
exactly what they compute after conversion: weights ``alpha * sign(W)`` per
output filter (ternary: TWN's threshold), inputs ``beta * sign(x)`` with
``sign(0) = -1``, padding ``-beta`` and ``beta`` the batch's mean ``|x|``; the
backward pass takes the float weights' and inputs' gradients unchanged (the
straight-through estimator).  First conv and classifier stay float
(``ends="exact"``); batch norm trains and is folded by ``convert`` afterwards
(binarising a filter commutes with BN's per-channel scale, so the folded
network binarises to what was trained).

Data: Fashion-MNIST training images, a seeded 5,000-image validation split
carved off the 60,000 (its accuracy reported from the torch model, for
choosing settings); training batches drawn from the other 55,000 with
horizontal flips.  The reported accuracy is that of the tabconv_np network
converted by ``convert(method=..., activations=...)`` from the fine-tuned
weights (``--calib`` calibration images from the training split), on the
1,000 shipped test-sample images, with no classifier refit and no
``refine``: both fit the float network the fine-tuned weights came from, which
is no longer the target (its own accuracy collapses once its weights are trained
for their signs).
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "weights"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tabconv_np.kernels._jit  # noqa: E402  (before torch: sets libgomp's spin count, see that module)
import tabconv_np  # noqa: E402
from tree_network import write_text_atomic  # noqa: E402

NETWORK = "resnet18-paper_fashion-mnist"
SETTINGS = (("binary", "float"), ("binary", "binary"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--calib", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--settings", default=",".join(f"{w}/{a}" for w, a in SETTINGS))
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "binary_finetune.md"))
    return p.parse_args(argv)


def quantized_conv(conv, weights, activations):
    """``conv`` (an ``nn.Conv2d``) computing as the converted layer does, with straight-through gradients."""
    import torch
    import torch.nn.functional as F

    def forward(x):
        w = conv.weight
        a = w.abs()
        mean = a.mean(dim=(1, 2, 3), keepdim=True)
        sign = torch.where(w > 0, 1.0, -1.0)
        if weights == "ternary":
            mask = (a > 0.7 * mean).float()
            alpha = (a * mask).sum(dim=(1, 2, 3), keepdim=True) / mask.sum(dim=(1, 2, 3), keepdim=True).clamp(min=1)
            wq = alpha * sign * mask
        else:
            wq = mean * sign
        w = w + (wq - w).detach()
        pad = conv.padding
        if activations == "binary":
            beta = x.detach().abs().mean()
            x = x + (beta * torch.where(x > 0, 1.0, -1.0) - x).detach()
            x = F.pad(x, (pad[1], pad[1], pad[0], pad[0]), value=float(-beta))      # padding is -beta
            pad = 0
        return F.conv2d(x, w, conv.bias, conv.stride, pad, conv.dilation)
    return forward


def finetune(net, weights, activations, x_train, y_train, x_val, y_val, args):
    """``(fine-tuned tabconv_np Network, validation accuracy, seconds)``."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from models_torch import torch_from_network
    torch.manual_seed(args.seed)
    model = torch_from_network(net).train()
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d) and name != "conv1":
            m.forward = quantized_conv(m, weights, activations)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    for step in range(args.steps):
        idx = rng.choice(len(x_train), args.batch, replace=False)
        xb = torch.from_numpy(x_train[idx])
        flip = torch.from_numpy(rng.random(args.batch) < 0.5)
        xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
        loss = F.cross_entropy(model(xb), torch.from_numpy(y_train[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 25 == 0 or step == args.steps - 1:
            print(f"  {weights}/{activations} step {step} loss {loss.item():.3f}", file=sys.stderr, flush=True)
    secs = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(x_val[i:i + 500])).argmax(1) for i in range(0, len(x_val), 500)])
    val = float((pred.numpy() == y_val).mean())
    tuned = tabconv_np.load(os.path.join(ROOT, "weights", NETWORK + ".h5"))
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    tuned.load_state_dict(sd)
    return tuned, val, secs


def main(args):
    import warnings

    import numpy as np
    import torch
    from tabconv_np.conversion import convert
    from tabconv_np.data import load_dataset
    torch.set_num_threads(1)
    tabconv_np.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = tabconv_np.load(os.path.join(ROOT, "weights", NETWORK + ".h5"))
    x, y = load_dataset("fashion-mnist", "train")
    order = np.random.default_rng(args.seed).permutation(len(x))
    val, train = order[:5000], order[5000:]
    xn = net.normalize(x).astype(np.float32)
    xc = x[np.sort(np.random.default_rng(args.seed + 1).choice(train, args.calib, replace=False))]
    xt, yt = load_dataset("sample", "test")
    exact = float(np.mean(net.predict(xt).argmax(1) == yt))
    L = ["# Binary and ternary ResNet-18 after a short STE fine-tune", "",
         f"Generated by `python bench/binary_finetune.py --steps {args.steps} --batch {args.batch} --lr {args.lr} "
         f"--calib {args.calib}` (torch, 1 thread): {args.steps} Adam steps of {args.batch} images from 55,000 "
         "Fashion-MNIST training images, the forward pass computing what the converted layers compute, gradients "
         "straight through; first conv and classifier float. Validation: 5,000 training images held out (torch "
         f"model). Test: the tabconv_np network converted from the fine-tuned weights ({args.calib} calibration "
         f"images, no classifier refit: the float network the fine-tuned weights came from is no target), on the "
         f"1,000 shipped test-sample images; exact network {exact:.2%}. Post-training: `convert` of the shipped "
         "network with the defaults (classifier refit, refine none).", "",
         "| method | activations | post-training test | fine-tuned: validation (torch) | fine-tuned: test "
         "(converted) | fine-tune (s) |",
         "|---|---|---:|---:|---:|---:|"]
    for item in args.settings.split(","):
        weights, activations = item.split("/")
        acc = {}
        before = convert(net, xc, method=weights, activations=activations, progress=False)
        acc["before"] = float(np.mean(before.network.predict(xt).argmax(1) == yt))
        tuned, vacc, secs = finetune(net, weights, activations, xn[train], y[train], xn[val], y[val], args)
        res = convert(tuned, xc, method=weights, activations=activations, refit_classifier=False, progress=False)
        acc["after"] = float(np.mean(res.network.predict(xt).argmax(1) == yt))
        L.append(f"| {weights} | {activations} | {acc['before']:.2%} | {vacc:.2%} | {acc['after']:.2%} | {secs:.0f} |")
        print(L[-1], file=sys.stderr, flush=True)
    write_text_atomic(args.out, "\n".join(L + [""]))
    print("\n".join(L))


if __name__ == "__main__":
    main(parse_args())
