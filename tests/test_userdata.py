"""The user's own images (tabconv_np.userdata): .npz/.npy arrays, IDX pairs, folders of PNG/JPEG."""
import gzip
import importlib.util
import json

import numpy as np
import pytest

from tabconv_np import save
from tabconv_np.cli import main
from tabconv_np.errors import DataError, ShapeError
from tabconv_np.models import build
from tabconv_np.userdata import load_user_images, model_dataset

from helpers import randomize

SHAPE = (1, 28, 28)
HAS_PIL = importlib.util.find_spec("PIL") is not None


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (12, 28, 28), dtype=np.uint8), rng.integers(0, 10, 12)


def write_idx(path, a):
    """An IDX file of uint8 array ``a`` (gzip when the name ends in .gz)."""
    raw = bytes([0, 0, 0x08, a.ndim]) + np.asarray(a.shape, ">u4").tobytes() + a.astype(np.uint8).tobytes()
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
        f.write(raw)


def test_npz_npy_and_layouts(tmp_path, arrays):
    x, y = arrays
    np.savez(tmp_path / "a.npz", images=x, labels=y)
    got, lab = load_user_images(str(tmp_path / "a.npz"), SHAPE)
    assert got.shape == (12, 1, 28, 28) and got.dtype == np.uint8 and np.array_equal(lab, y)
    np.save(tmp_path / "b.npy", x[..., None].astype(np.int64))            # NHWC, int64 pixels
    got, lab = load_user_images(str(tmp_path / "b.npy"), SHAPE, limit=5)
    assert got.shape == (5, 1, 28, 28) and got.dtype == np.uint8 and lab is None
    assert np.array_equal(got[:, 0], x[:5])


def test_idx_pair(tmp_path, arrays):
    x, y = arrays
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y)
    got, lab = load_user_images(str(tmp_path / "t10k-images-idx3-ubyte.gz"), SHAPE)
    assert np.array_equal(got[:, 0], x) and np.array_equal(lab, y)


def test_bad_user_data_is_refused_with_a_reason(tmp_path, arrays):
    x, y = arrays
    with pytest.raises(DataError, match="no such file"):
        load_user_images(str(tmp_path / "missing.npz"), SHAPE)
    np.savez(tmp_path / "short.npz", images=x, labels=y[:3])
    with pytest.raises(DataError, match="labels must be 12"):
        load_user_images(str(tmp_path / "short.npz"), SHAPE)
    np.save(tmp_path / "rgb.npy", np.zeros((2, 3, 28, 28), np.uint8))
    with pytest.raises(ShapeError, match=r"takes \(N, 1, 28, 28\)"):
        load_user_images(str(tmp_path / "rgb.npy"), SHAPE)
    np.save(tmp_path / "wide.npy", np.full((2, 28, 28), 300, np.int32))
    with pytest.raises(DataError, match="outside 0..255"):
        load_user_images(str(tmp_path / "wide.npy"), SHAPE)
    np.savez(tmp_path / "two.npz", a=x, b=x)
    with pytest.raises(DataError, match="name it 'images'"):
        load_user_images(str(tmp_path / "two.npz"), SHAPE)


@pytest.mark.skipif(HAS_PIL, reason="Pillow is installed")
def test_folder_without_pillow_says_how(tmp_path):
    (tmp_path / "cat").mkdir()
    with pytest.raises(DataError, match="pip install Pillow"):
        load_user_images(str(tmp_path), SHAPE)


@pytest.mark.skipif(not HAS_PIL, reason="Pillow (optional extra) not installed")
def test_folder_of_pngs_per_class(tmp_path, arrays):
    from PIL import Image
    x, _ = arrays
    for i, cls in enumerate(("a_cat", "b_dog")):
        (tmp_path / cls).mkdir()
        for j in range(3):
            Image.fromarray(x[3 * i + j]).save(tmp_path / cls / f"{j}.png")
    (tmp_path / "b_dog" / "notes.txt").write_text("not an image")
    got, lab = load_user_images(str(tmp_path), SHAPE)
    assert np.array_equal(got[:, 0], x[:6]) and lab.tolist() == [0, 0, 0, 1, 1, 1]
    Image.fromarray(x[0][:20]).save(tmp_path / "a_cat" / "odd.png")
    with pytest.raises(DataError, match="different sizes"):
        load_user_images(str(tmp_path), SHAPE)


def test_model_dataset_follows_the_file():
    net = build("lenet", 1, 10)
    with pytest.raises(DataError, match="records no data set.*--dataset.*--data PATH"):
        model_dataset(net, "tabconv eval")
    net.meta["dataset"] = "mnist"
    assert model_dataset(net, "tabconv eval") == "mnist"
    net.meta["dataset"] = "fashion-mnist"
    assert model_dataset(net, "tabconv eval") == "sample"
    net.meta["dataset"] = "imagenet"
    with pytest.raises(DataError, match="'imagenet', which tabconv_np cannot load"):
        model_dataset(net, "tabconv eval")


def test_cli_eval_and_convert_on_user_data(tmp_path, arrays, capsys):
    x, y = arrays
    src = tmp_path / "net.h5"
    save(randomize(build("lenet", 1, 10)), src)
    np.savez(tmp_path / "mine.npz", images=x, labels=y)
    np.save(tmp_path / "nolabels.npy", x)
    assert main(["eval", str(src)]) == 2                             # no data set recorded: refused
    assert "records no data set" in capsys.readouterr().err
    assert main(["eval", str(src), "--data", str(tmp_path / "mine.npz"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["images"] == 12 and r["data"] == str(tmp_path / "mine.npz")
    assert main(["eval", str(src), "--data", str(tmp_path / "nolabels.npy")]) == 2
    assert "has no labels" in capsys.readouterr().err
    out = tmp_path / "t.h5"
    assert main(["convert", str(src), "-o", str(out), "--data", str(tmp_path / "nolabels.npy"),
                 "--codebooks", "2", "--prototypes", "4", "--iters", "1", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["calibration_data"] == str(tmp_path / "nolabels.npy")
    assert "--data " in captured.err and "--prototypes 4" in captured.err       # settings printed first


def test_damaged_archives_and_fifos_are_refused(tmp_path):
    import os
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04" + b"garbage" * 10)
    with pytest.raises(DataError, match="unreadable .npz"):
        load_user_images(str(bad), (1, 28, 28))
    fifo = tmp_path / "pipe.npy"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        load_user_images(str(fifo), (1, 28, 28))
