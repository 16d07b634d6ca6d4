"""Datasets that cannot be read, through ``amalgam amalgamate``: exit 2 naming the
file (and line, for annotation files) and what was expected; a corrupt image in a
folder is skipped and counted, or fails the run, as ``data.on_corrupt`` says."""

import struct

import numpy as np
from PIL import Image

from tests.robustness.contract import assert_bad_input, assert_no_partial_files, base_config, write_config
from tests.synthetic import make_images


def amalgamate(cli, assets, tmp_path, train, **data):
    config = base_config(assets)
    config["data"]["train"] = train
    config["data"].update(data)
    out, cache = tmp_path / "run", tmp_path / "cache"
    result = cli("amalgamate", write_config(tmp_path, config), "--out", out, "--quiet", "--cache-dir", cache)
    assert_no_partial_files(out, cache)
    return result


def test_empty_npz(cli, assets, tmp_path):
    np.savez(tmp_path / "empty.npz", images=np.zeros((0, 16, 16), np.uint8))
    result = amalgamate(cli, assets, tmp_path, {"format": "numpy", "path": str(tmp_path / "empty.npz")})
    assert_bad_input(result, "empty.npz: no images")


def test_unreadable_npz(cli, assets, tmp_path):
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04" + b"\0" * 64)
    result = amalgamate(cli, assets, tmp_path, {"format": "numpy", "path": str(tmp_path / "broken.npz")})
    assert_bad_input(result, "broken.npz: cannot read as .npz")


def test_npz_with_pickled_objects_is_not_unpickled(cli, assets, tmp_path):
    np.savez(tmp_path / "objects.npz", images=np.array([{"a": 1}] * 4, dtype=object))
    result = amalgamate(cli, assets, tmp_path, {"format": "numpy", "path": str(tmp_path / "objects.npz")})
    assert_bad_input(result, "objects.npz: cannot read as .npz (reading it would mean unpickling objects")
    assert "allow_pickle" not in result.err  # no advice to load it unsafely


def test_missing_data_path(cli, assets, tmp_path):
    result = amalgamate(cli, assets, tmp_path, {"format": "numpy", "path": str(tmp_path / "absent.npz")})
    assert_bad_input(result, "absent.npz: no such file or folder")


def test_empty_image_folder(cli, assets, tmp_path):
    (tmp_path / "images").mkdir()
    result = amalgamate(cli, assets, tmp_path, {"format": "folder", "path": str(tmp_path / "images")})
    assert_bad_input(result, "images: no readable images")


def image_folder(folder, n=40):
    folder.mkdir()
    for i, image in enumerate(make_images(n, seed=3)[0]):
        Image.fromarray(image[0]).save(folder / f"{i:03d}.png")
    (folder / "020b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"broken" * 5)
    return folder


def test_corrupt_image_fails_the_run_when_asked(cli, assets, tmp_path):
    folder = image_folder(tmp_path / "images")
    result = amalgamate(cli, assets, tmp_path, {"format": "folder", "path": str(folder)}, on_corrupt="fail")
    assert_bad_input(result, "020b.png: not a readable image")


def test_corrupt_image_is_skipped_and_counted_by_default(cli, assets, tmp_path, caplog):
    folder = image_folder(tmp_path / "images")
    result = amalgamate(cli, assets, tmp_path, {"format": "folder", "path": str(folder)})
    assert result.code == 0, result
    assert "skipped 1 unreadable image(s), first: " in caplog.text and "020b.png" in caplog.text
    assert (tmp_path / "run" / "metrics.json").exists()


def test_wrong_idx_magic_number(cli, assets, tmp_path):
    folder = tmp_path / "idx"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2049, 3, 16, 16) + bytes(3 * 256))
    result = amalgamate(cli, assets, tmp_path, {"format": "idx", "path": str(folder)})
    assert_bad_input(result, "train-images-idx3-ubyte: expected IDX magic number 2051 (images), found 2049")


def test_truncated_idx(cli, assets, tmp_path):
    folder = tmp_path / "idx"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, 3, 16, 16) + bytes(300))
    result = amalgamate(cli, assets, tmp_path, {"format": "idx", "path": str(folder)})
    assert_bad_input(result, "train-images-idx3-ubyte: truncated: expected 768 bytes")


def test_malformed_celeba_attribute_file(cli, assets, tmp_path):
    root = tmp_path / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    (root / "list_attr_celeba.txt").write_text("2\nSmiling Male\n000001.jpg 1 -1\n000002.jpg 1\n")
    result = amalgamate(cli, assets, tmp_path, {"format": "celeba", "path": str(root), "split": "all"})
    assert_bad_input(
        result, "list_attr_celeba.txt:4: expected a file name and 2 values of 1 or -1", "found '000002.jpg 1'"
    )
