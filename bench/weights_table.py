"""Print the README's table of shipped weights from weights/MANIFEST.json.

    python bench/weights_table.py

Parameters and MACs are counted by tabconv_np.count_ops on each file's own
input shape (batch 1; MACs of conv + linear layers); accuracies are the
manifest's (full test split: 10,000 Fashion-MNIST images, or the 1,000-image
test split of the MNIST subset), measured by weights/export.py.
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import tabconv_np  # noqa: E402

WEIGHTS = os.path.join(os.path.dirname(__file__), "..", "weights")


def main():
    files = json.load(open(os.path.join(WEIGHTS, "MANIFEST.json")))["files"]
    print("| network | dataset | test images | parameters | MACs | torch accuracy | tabconv_np accuracy "
          "| file size (dtype) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, m in sorted(files.items()):
        net = tabconv_np.load(os.path.join(WEIGHTS, name))
        total = tabconv_np.count_ops(net).total
        print(f"| {m['architecture']} | {m['dataset']} | {m['test_images']:,} | {total['params'] / 1e6:.2f} M "
              f"| {total['macs'] / 1e6:.2f} M | {100 * m['torch_test_accuracy']:.2f}% "
              f"| {100 * m['tabconv_np_test_accuracy']:.2f}% | {m['size_bytes'] / 2**20:.1f} MiB ({m['float_dtype']}) |")


if __name__ == "__main__":
    main()
