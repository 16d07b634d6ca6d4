"""Teachers of different architectures lined up by stride (runtime.align), on real
torchvision architectures exported to ONNX."""

import onnx
import pytest

from amalgam.runtime.align import align, image_size, stride, table
from amalgam.runtime.blocks import Boundary, find_boundaries
from amalgam.runtime.errors import BoundaryError
from amalgam.runtime.normalize import normalize
from tests.builders import PlainCNN, export, torchvision_teacher

SIZE = 32
WIDTHS = {  # each stage end's channels, stride 4 to 32 (the architectures' own numbers)
    "resnet18": [64, 128, 256, 512],
    "regnet_y_400mf": [48, 104, 208, 440],
    "mobilenet_v3_small": [72, 96, 288, 576],  # the last tensor at each stride
}


@pytest.fixture(scope="module")
def boundaries(tmp_path_factory):
    folder = tmp_path_factory.mktemp("align")
    out = {}
    for name in WIDTHS:
        graph = normalize(onnx.load(torchvision_teacher(name, folder / f"{name}.onnx", size=SIZE)), [1, 3, SIZE, SIZE])
        assert image_size(graph) == (SIZE, SIZE)
        out[name] = find_boundaries(graph)
    return out


def _channels(rows):
    return [r.other.shape[1] for r in rows]


def test_resnet_against_regnet_and_mobilenet_pairs_stage_ends(boundaries):
    ref = boundaries["resnet18"]
    assert [stride(b, (SIZE, SIZE)) for b in ref] == [4, 8, 16, 32]
    for other in ("regnet_y_400mf", "mobilenet_v3_small"):
        rows = align(ref, (SIZE, SIZE), boundaries[other], (SIZE, SIZE), ("resnet18", other))
        assert [r.block for r in rows] == [1, 2, 3, 4]
        assert [r.reference.name for r in rows] == [b.name for b in ref]
        assert [(r.reference_stride, r.other_stride) for r in rows] == [(4, 4), (8, 8), (16, 16), (32, 32)]
        assert _channels(rows) == WIDTHS[other]
        assert not any(r.resized for r in rows)
        # the last tensor at that resolution: no later boundary of the other teacher has the same stride
        names = [b.name for b in boundaries[other]]
        for r in rows:
            later = boundaries[other][names.index(r.other.name) + 1 :]
            assert all(stride(b, (SIZE, SIZE)) > r.other_stride for b in later)


def test_a_finer_reference_block_pairs_with_the_nearest_coarser_stride(boundaries):
    ref, other = boundaries["regnet_y_400mf"], boundaries["resnet18"]
    rows = align(ref, (SIZE, SIZE), other, (SIZE, SIZE), ("regnet", "resnet"))
    assert [(r.reference_stride, r.other_stride) for r in rows] == [(2, 4), (4, 4), (8, 8), (16, 16), (32, 32)]
    assert [r.other.name for r in rows] == [other[0].name] + [b.name for b in other]
    assert [r.resized for r in rows] == [True, False, False, False, False]
    text = table(rows, ("regnet", "resnet"))
    assert len(text) == 6 and "(resized)" in text[1] and "stride 2, 32 ch" in text[1]


def test_same_strides_pair_one_to_one(boundaries):
    ref = boundaries["mobilenet_v3_small"]
    rows = align(ref, (SIZE, SIZE), ref, (SIZE, SIZE))
    assert [r.other.name for r in rows] == [b.name for b in ref]


def test_strides_follow_each_teachers_image_size_and_layout():
    ref = [Boundary("a", ["batch", 8, 16, 16], "NCHW"), Boundary("b", ["batch", 16, 8, 8], "NCHW")]
    other = [
        Boundary("x", ["batch", 24, 24, 4], "NHWC"),
        Boundary("y", ["batch", 12, 12, 9], "NHWC"),
        Boundary("z", ["batch", 6, 6, 9], "NHWC"),
    ]
    rows = align(ref, (32, 32), other, (48, 48))
    assert [(r.other.name, r.other_stride) for r in rows] == [("x", 2), ("y", 4)]
    # a padded stride-2 convolution rounds up: 48 / 2 px at stride 32 still reads as 32
    assert stride(Boundary("c", ["batch", 4, 2, 2], "NCHW"), (48, 48)) == 32


def test_no_boundary_at_the_reference_stride_or_coarser_is_refused(boundaries, tmp_path):
    shallow = normalize(
        onnx.load(
            export(PlainCNN(channels=(8, 16), in_ch=3), tmp_path / "shallow.onnx", input_shape=(2, 3, SIZE, SIZE))
        ),
        [1, 3, SIZE, SIZE],
    )
    other = find_boundaries(shallow)
    assert [stride(b, (SIZE, SIZE)) for b in other] == [2, 2]  # the max-pool, the last ReLU
    with pytest.raises(BoundaryError) as err:
        align(boundaries["resnet18"], (SIZE, SIZE), other, (SIZE, SIZE), ("R", "S"))
    message = str(err.value)
    assert "\n" not in message and err.value.exit_code == 2
    assert "'R'" in message and "'S'" in message and "R 4, 8, 16, 32" in message and "S 2, 2" in message


def test_an_open_spatial_size_is_refused():
    with pytest.raises(BoundaryError, match="no fixed spatial size"):
        stride(Boundary("a", ["batch", 8, "h", "w"], "NCHW"), (32, 32))
