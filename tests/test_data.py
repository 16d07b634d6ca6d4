import gzip
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from amalgam.runtime.errors import DataError
from amalgam.toolkit.data import Preprocess, eval_labels, open_source, split_holdout
from amalgam.toolkit.data.celeba import CelebASource
from amalgam.toolkit.data.folder import FolderSource

FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path, array, magic=None, gz=False, cut=0):
    dims = array.shape
    magic = magic if magic is not None else 2048 + len(dims)
    data = struct.pack(f">I{len(dims)}I", magic, *dims) + array.astype(np.uint8).tobytes()
    data = data[: len(data) - cut]
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def idx_folder(tmp, n=7, gz=True, prefix="train", seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 6, 5), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    ext = ".gz" if gz else ""
    write_idx(tmp / f"{prefix}-images-idx3-ubyte{ext}", images, gz=gz)
    write_idx(tmp / f"{prefix}-labels-idx1-ubyte{ext}", labels, gz=gz)
    return images, labels


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reads_images_and_labels(tmp_path, gz):
    images, labels = idx_folder(tmp_path, gz=gz)
    test_images, _ = idx_folder(tmp_path, n=3, gz=gz, prefix="t10k", seed=1)
    src = open_source({"format": "idx", "path": tmp_path, "split": "train"})
    assert len(src) == 7 and src.label_names is None
    batch = src.images([0, 3])
    assert batch.dtype == np.float32 and batch.shape == (2, 1, 6, 5)
    np.testing.assert_allclose(batch[:, 0], images[[0, 3]] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(src.labels(), labels)
    image, label = src[4]
    assert image.shape == (1, 6, 5) and label == labels[4]
    test = open_source({"format": "idx", "path": tmp_path, "split": "test"})
    np.testing.assert_allclose(test.images([2])[0, 0], test_images[2] / 255.0, atol=1e-7)
    assert test.fingerprint() != src.fingerprint()


def test_idx_size_channels_limit_and_dotted_names(tmp_path):
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images.idx3-ubyte", rng.integers(0, 256, (5, 4, 4)))
    src = open_source({"format": "idx", "path": tmp_path, "limit": 3}, size=(8, 6), channels=3)
    assert len(src) == 3 and src.labels() is None
    batch = src.images(range(3))
    assert batch.shape == (3, 3, 8, 6)
    np.testing.assert_array_equal(batch[:, 0], batch[:, 2])
    chunks = [(idx.tolist(), imgs.shape[0]) for idx, imgs in src.batches(2)]
    assert chunks == [([0, 1], 2), ([2], 1)]


def test_idx_wrong_magic_truncated_and_mismatch(tmp_path):
    images = np.zeros((4, 3, 3), np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", images, magic=2049)
    with pytest.raises(
        DataError,
        match=r"train-images-idx3-ubyte: expected IDX magic "
        r"number 2051 \(images\), found 2049",
    ):
        open_source({"format": "idx", "path": tmp_path})
    write_idx(tmp_path / "train-images-idx3-ubyte", images, cut=5)
    with pytest.raises(DataError, match="train-images-idx3-ubyte: truncated: expected 36 bytes"):
        open_source({"format": "idx", "path": tmp_path})
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros((4, 3, 3)))
    with pytest.raises(
        DataError,
        match=r"train-labels-idx1-ubyte: expected IDX magic number "
        r"2049 \(labels\), found 2051",
    ):
        open_source({"format": "idx", "path": tmp_path})
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3))
    with pytest.raises(DataError, match="3 labels for 4 images"):
        open_source({"format": "idx", "path": tmp_path})
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"x" * 99)[:-6])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: not a valid gzip file"):
        open_source({"format": "idx", "path": tmp_path, "split": "test"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no t10k-images-idx3-ubyte\[\.gz\]"):
        open_source({"format": "idx", "path": tmp_path / "empty", "split": "test"})


def test_fingerprint_stable_and_follows_content(tmp_path):
    images, _ = idx_folder(tmp_path, gz=False)
    spec = {"format": "idx", "path": tmp_path}
    first = open_source(spec).fingerprint()
    assert open_source(spec).fingerprint() == first
    assert open_source(spec, size=(7, 7)).fingerprint() != first
    assert open_source({**spec, "limit": 2}).fingerprint() != first
    images[0, 0, 0] ^= 1
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    assert open_source(spec).fingerprint() != first


def image_folder(tmp):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    Image.fromarray(grey).save(tmp / "b.png")
    (tmp / "sub").mkdir()
    Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).save(tmp / "sub/c.jpg")
    Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(tmp / "a.bmp")
    (tmp / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (tmp / "notes.txt").write_text("not an image")
    return grey


def test_folder_sorted_resized_and_skips_corrupt(tmp_path, caplog):
    grey = image_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="amalgam.data"):
        src = open_source({"format": "folder", "path": tmp_path}, size=(6, 5), channels=1)
    assert [f.name for f in src.files] == ["a.bmp", "b.png", "c.jpg"]
    assert [f.name for f in src.skipped] == ["broken.png"]
    assert "skipped 1 unreadable image(s), first: " in caplog.text
    assert "broken.png" in caplog.text
    assert len(src) == 3 and src.labels() is None
    batch = src.images([1, 2, 0])
    assert batch.shape == (3, 1, 6, 5) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0, 0], grey / 255.0, atol=1e-7)  # png: lossless
    rgb = FolderSource(tmp_path)  # size: the first image's; channels: 3
    assert rgb.images([2]).shape == (1, 3, 4, 4)


def test_folder_fail_mode_empty_and_fingerprint(tmp_path):
    image_folder(tmp_path)
    with pytest.raises(DataError, match=r"broken\.png: not a readable image"):
        open_source({"format": "folder", "path": tmp_path}, on_corrupt="fail")
    first = FolderSource(tmp_path, size=(4, 4)).fingerprint()
    assert FolderSource(tmp_path, size=(4, 4)).fingerprint() == first
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "b.png")
    assert FolderSource(tmp_path, size=(4, 4)).fingerprint() != first
    empty = tmp_path / "empty"
    (empty / "deeper").mkdir(parents=True)
    (empty / "deeper" / "x.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=f"{empty}: no readable images .* 1 unreadable"):
        open_source({"format": "folder", "path": empty})
    with pytest.raises(DataError, match="no such file or folder"):
        open_source({"format": "folder", "path": tmp_path / "absent"})


ATTRS = ["Smiling", "Male", "Young"]


def celeba(tmp, rows=None, partition=None):
    files = [f"{i:06d}.jpg" for i in range(1, 6)]
    rows = rows or [f"{f}  {' '.join('1' if (i + j) % 2 else '-1' for j in range(3))}" for i, f in enumerate(files)]
    (tmp / "list_attr_celeba.txt").write_text(f"{len(rows)}\n{' '.join(ATTRS)}\n" + "\n".join(rows) + "\n")
    partition = partition or [f"{f} {p}" for f, p in zip(files, "00122")]
    (tmp / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")
    (tmp / "img_align_celeba").mkdir(exist_ok=True)
    for i, f in enumerate(files):
        Image.fromarray(np.full((10, 8, 3), 40 * i, np.uint8)).save(tmp / "img_align_celeba" / f)


def test_celeba_splits_attributes_and_images(tmp_path):
    celeba(tmp_path)
    train = open_source({"format": "celeba", "path": tmp_path, "split": "train"})
    assert len(train) == 2 and train.label_names == ATTRS
    np.testing.assert_array_equal(train.labels(), [[0, 1, 0], [1, 0, 1]])
    assert train.images([1]).shape == (1, 3, 10, 8)
    assert abs(float(train.images([1]).mean()) - 40 / 255) < 0.02  # jpeg: near 40
    test = CelebASource(tmp_path, "test", size=(5, 4), channels=1)
    assert len(test) == 2 and test.images([0, 1]).shape == (2, 1, 5, 4)
    assert len(CelebASource(tmp_path, "all")) == 5
    assert len(CelebASource(tmp_path, "valid")) == 1
    assert CelebASource(tmp_path, "all").fingerprint() != train.fingerprint()


def test_celeba_malformed_files_name_the_line(tmp_path):
    celeba(tmp_path, rows=["000001.jpg 1 -1 1", "000002.jpg 1 0 1"])
    with pytest.raises(
        DataError,
        match=r"list_attr_celeba.txt:4: expected a file name and 3 "
        r"values of 1 or -1, found '000002.jpg 1 0 1'",
    ):
        open_source({"format": "celeba", "path": tmp_path})
    celeba(tmp_path, partition=["000001.jpg 0", "000002.jpg train"])
    with pytest.raises(
        DataError,
        match=r"list_eval_partition.txt:2: expected a file name "
        "and 0, 1 or 2",
    ):
        open_source({"format": "celeba", "path": tmp_path})
    celeba(tmp_path)
    (tmp_path / "img_align_celeba" / "000004.jpg").unlink()
    with pytest.raises(DataError, match="1 image.* missing, first: 000004.jpg"):
        open_source({"format": "celeba", "path": tmp_path, "split": "test"})


def test_numpy_layouts_labels_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (4, 6, 5, 3), dtype=np.uint8)
    np.savez(
        tmp_path / "a.npz",
        images=nhwc,
        labels=np.array([[1, 0], [0, 1], [1, 1], [0, 0]]),
        label_names=np.array(["Smiling", "Male"]),
    )
    src = open_source({"format": "numpy", "path": tmp_path / "a.npz"})
    assert src.images([1]).shape == (1, 3, 6, 5) and src.label_names == ["Smiling", "Male"]
    np.testing.assert_allclose(src.images([1])[0], nhwc[1].transpose(2, 0, 1) / 255, atol=1e-7)
    assert src.labels().shape == (4, 2)
    floats = rng.random((3, 1, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "b.npz", images=floats)
    np.testing.assert_array_equal(open_source({"format": "numpy", "path": tmp_path / "b.npz"}).images([2]), floats[[2]])
    np.savez(tmp_path / "c.npz", images=floats * 255)
    with pytest.raises(DataError, match=r"c.npz: float 'images' must lie in \[0, 1\]"):
        open_source({"format": "numpy", "path": tmp_path / "c.npz"})
    np.savez(tmp_path / "d.npz", pixels=floats)
    with pytest.raises(DataError, match=r"d.npz: no 'images' array; found \['pixels'\]"):
        open_source({"format": "numpy", "path": tmp_path / "d.npz"})
    (tmp_path / "e.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="e.npz: cannot read as .npz"):
        open_source({"format": "numpy", "path": tmp_path / "e.npz"})
    np.savez(tmp_path / "f.npz", images=floats[:0])
    with pytest.raises(DataError, match="f.npz: no images"):
        open_source({"format": "numpy", "path": tmp_path / "f.npz"})


def test_preprocess_layout_normalisation_and_channels():
    x = np.random.default_rng(0).random((2, 1, 4, 4)).astype(np.float32)
    pre = Preprocess((4, 4), 3, mean=[0.5, 0.0, 0.25], std=[0.5], layout="NHWC")
    y = pre(x)
    assert y.shape == (2, 4, 4, 3) and y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_allclose(y[..., 0], (x[:, 0] - 0.5) / 0.5, atol=1e-6)
    np.testing.assert_allclose(y[..., 2], (x[:, 0] - 0.25) / 0.5, atol=1e-6)
    rgb = np.random.default_rng(1).random((1, 3, 2, 2)).astype(np.float32)
    grey = Preprocess((2, 2), 1)(rgb)
    np.testing.assert_allclose(grey[0, 0], 0.299 * rgb[0, 0] + 0.587 * rgb[0, 1] + 0.114 * rgb[0, 2], atol=1e-6)
    assert pre.fingerprint() != Preprocess((4, 4), 3, layout="NHWC").fingerprint()
    assert pre.fingerprint() == Preprocess((4, 4), 3, [0.5, 0.0, 0.25], [0.5], "NHWC").fingerprint()
    with pytest.raises(ValueError, match="mean: expected 1 or 3 values, found 2"):
        Preprocess((4, 4), 3, mean=[0.1, 0.2])


@pytest.mark.parametrize("method", ["bilinear", "nearest"])
@pytest.mark.parametrize("size", [(12, 9), (3, 5)])
def test_resize_matches_torch(method, size):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).random((2, 3, 7, 6)).astype(np.float32)
    ours = Preprocess(size, 3, resize=method)(x)
    kwargs = {"align_corners": False} if method == "bilinear" else {}
    ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode=method, **kwargs)
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-5)


def test_split_holdout_deterministic_and_disjoint():
    train, hold = split_holdout(100, 0.1, seed=3)
    assert len(hold) == 10 and len(train) == 90
    assert sorted(np.concatenate([train, hold]).tolist()) == list(range(100))
    again = split_holdout(100, 0.1, seed=3)
    np.testing.assert_array_equal(hold, again[1])
    assert not np.array_equal(hold, split_holdout(100, 0.1, seed=4)[1])
    assert [len(p) for p in split_holdout(5, 0.01, 0)] == [4, 1]
    assert [len(p) for p in split_holdout(5, 0.0, 0)] == [5, 0]


def test_eval_labels_rules(tmp_path):
    idx_folder(tmp_path)
    classes = open_source({"format": "idx", "path": tmp_path})
    y = classes.labels()
    got = eval_labels(
        classes, {"tshirt": {"class": 3}, "digit": {"classes": "all"}}, ["tshirt", "digit", {"name": "unlabelled"}]
    )
    assert sorted(got) == ["digit", "tshirt"]
    np.testing.assert_array_equal(got["tshirt"], (y == 3).astype(np.uint8))
    np.testing.assert_array_equal(got["digit"], y)
    with pytest.raises(DataError, match="needs attribute labels"):
        eval_labels(classes, {"smiling": {"attribute": "Smiling"}}, ["smiling"])
    (tmp_path / "c").mkdir()
    celeba(tmp_path / "c")
    faces = open_source({"format": "celeba", "path": tmp_path / "c", "split": "all"})
    got = eval_labels(faces, {"happy": {"attribute": "Smiling"}}, ["happy", "male", "young"])
    np.testing.assert_array_equal(got["happy"], faces.labels()[:, 0])
    np.testing.assert_array_equal(got["male"], faces.labels()[:, 1])  # matched by name
    with pytest.raises(DataError, match=r"no label named 'Smilling'; closest: \['Smiling'\]"):
        eval_labels(faces, {"s": {"attribute": "Smilling"}}, ["s"])
    with pytest.raises(DataError, match="needs one class per image"):
        eval_labels(faces, {"s": {"class": 1}}, ["s"])
    with pytest.raises(DataError, match="has no labels"):
        eval_labels(FolderSource(tmp_path / "c" / "img_align_celeba"), {}, ["s"])


@pytest.mark.skipif(not FASHION.is_dir(), reason="Fashion-MNIST not installed")
def test_real_fashion_mnist():
    train = open_source({"format": "idx", "path": FASHION, "split": "train"})
    test = open_source({"format": "idx", "path": FASHION, "split": "test"})
    assert (len(train), len(test)) == (60000, 10000)
    assert train.images([0, 59999]).shape == (2, 1, 28, 28)
    assert sorted(np.unique(test.labels()).tolist()) == list(range(10))
    assert np.bincount(test.labels()).tolist() == [1000] * 10
