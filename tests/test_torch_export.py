"""export_torch on real modules: round trip in ONNX Runtime, metadata, fallback, failures."""

import logging

import numpy as np
import onnx
import pytest
import torch

from amalgam.exporters.metadata import read_metadata
from amalgam.exporters.torch_export import export_torch
from amalgam.runtime.errors import ExportError, ParityError
from amalgam.runtime.session import make_session
from tests.builders import SECNN, ResidualCNN, randomize_bn


def _ort(path, x):
    sess = make_session(path, opt_level="basic")
    return sess.run(None, {sess.get_inputs()[0].name: x})


def _no_external_data(path):
    model = onnx.load(str(path), load_external_data=False)
    return all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
def test_round_trip_at_batch_1_and_7(tmp_path, dynamo, caplog):
    module = randomize_bn(ResidualCNN(n_out=4))
    tasks = [{"name": "cat", "output": "logits", "index": 0, "kind": "binary"}]
    with caplog.at_level(logging.INFO, logger="amalgam.exporters.torch_export"):
        path = export_torch(
            module,
            torch.randn(2, 1, 28, 28),
            tmp_path / "m.onnx",
            input_names=("image",),
            output_names=("logits",),
            tasks=tasks,
            dynamo=dynamo,
        )
    assert "failed" not in caplog.text  # the dynamo exporter did it, no fallback
    assert path == tmp_path / "m.onnx" and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert _no_external_data(path)
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["image"] and [o.name for o in model.graph.output] == ["logits"]
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {18}
    for n in (1, 7):
        x = np.random.rand(n, 1, 28, 28).astype(np.float32)
        with torch.no_grad():
            ref = module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(_ort(path, x)[0], ref, atol=1e-5)
    meta = read_metadata(path)
    assert meta["framework"] == "torch" and meta["framework_version"] == torch.__version__
    assert meta["tasks"] == tasks


def test_fixed_batch_and_taskspec_objects(tmp_path):
    from amalgam.runtime.teacher import TaskSpec

    module = SECNN(n_out=3).eval()
    spec = TaskSpec("digit", "y", kind="multiclass", labels=["a", "b", "c"])
    path = export_torch(
        module, torch.randn(3, 1, 16, 16), tmp_path / "f.onnx", output_names=("y",), dynamic_batch=False, tasks=[spec]
    )
    shape = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in shape] == [3, 1, 16, 16]
    assert read_metadata(path)["tasks"] == [spec.to_dict()]


class TwoHeads(torch.nn.Module):
    """Two inputs and two outputs, with dropout to show eval mode during export."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(6, 3), torch.nn.Linear(4, 2)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x, z):
        h = self.drop(self.a(x))
        return h, self.b(z) + h.sum(dim=1, keepdim=True)


def test_named_inputs_outputs_and_training_mode_restored(tmp_path):
    module = TwoHeads().train()
    module.b.eval()  # mixed modes come back as they were
    x, z = torch.randn(2, 6), torch.randn(2, 4)
    path = export_torch(module, (x, z), tmp_path / "two.onnx", input_names=("x", "z"), output_names=("p", "q"))
    assert module.training and module.a.training and not module.b.training and module.drop.training
    sess = make_session(path)
    assert [i.name for i in sess.get_inputs()] == ["x", "z"] and [o.name for o in sess.get_outputs()] == ["p", "q"]
    xs, zs = torch.randn(5, 6), torch.randn(5, 4)
    p, q = sess.run(None, {"x": xs.numpy(), "z": zs.numpy()})
    with torch.no_grad():
        ref_p, ref_q = module.eval()(xs, zs)
    np.testing.assert_allclose(p, ref_p.numpy(), atol=1e-5)
    np.testing.assert_allclose(q, ref_q.numpy(), atol=1e-5)


class SignSwitch(torch.nn.Module):
    """Data-dependent Python control flow: the branch follows the first row's sign."""

    def forward(self, x):
        if x[0].sum() > 0:
            return x * 2
        return -x


def test_data_dependent_flow_falls_back_and_the_check_catches_it(tmp_path, caplog):
    sample = torch.stack([torch.ones(4), -torch.ones(4)])  # first row positive, last row negative
    with caplog.at_level(logging.INFO, logger="amalgam.exporters.torch_export"), pytest.raises(ParityError) as e:
        export_torch(SignSwitch(), sample, tmp_path / "s.onnx")
    assert "dynamo exporter failed" in caplog.text and "trying the legacy exporter" in caplog.text
    msg = str(e.value)
    assert e.value.exit_code == 1 and "\n" not in msg
    assert msg.startswith(str(tmp_path / "s.onnx")) and "at batch 1" in msg and "'output': max abs error 3" in msg
    assert list(tmp_path.iterdir()) == []


def test_legacy_only_when_asked(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="amalgam.exporters.torch_export"):
        path = export_torch(torch.nn.Linear(3, 2), torch.randn(4, 3), tmp_path / "l.onnx", dynamo=False)
    assert caplog.text == "" and _no_external_data(path)
    x = np.random.rand(7, 3).astype(np.float32)
    assert _ort(path, x)[0].shape == (7, 2)


class Eigen(torch.nn.Module):
    """An op neither exporter can write (complex eigenvalues)."""

    def forward(self, x):
        return torch.linalg.eigvals(x).real


def test_module_no_exporter_can_export(tmp_path):
    with pytest.raises(ExportError) as e:
        export_torch(Eigen(), torch.randn(2, 3, 3), tmp_path / "e.onnx")
    msg = str(e.value)
    assert "cannot export Eigen" in msg and "dynamo exporter:" in msg and "legacy exporter:" in msg
    assert "linalg_eigvals" in msg and list(tmp_path.iterdir()) == []


def test_mismatched_names_are_refused(tmp_path):
    with pytest.raises(ExportError, match=r"returns 2 tensors but output_names is \['output'\]"):
        export_torch(TwoHeads(), (torch.randn(2, 6), torch.randn(2, 4)), tmp_path / "t.onnx", input_names=("x", "z"))
    with pytest.raises(ExportError, match=r"2 sample inputs but input_names \['input'\]"):
        export_torch(TwoHeads(), (torch.randn(2, 6), torch.randn(2, 4)), tmp_path / "t.onnx")


def test_dynamo_export_is_quiet(tmp_path, capfd):
    export_torch(torch.nn.Linear(3, 2), torch.randn(4, 3), tmp_path / "q.onnx")
    assert capfd.readouterr().out == ""


class ClassToken(torch.nn.Module):
    """A ViT-like head: a learned token expanded to the batch, which torch.export fixes at 1 from a batch-1 sample."""

    def __init__(self):
        super().__init__()
        self.token = torch.nn.Parameter(torch.randn(1, 1, 4))
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        n = x.shape[0]
        seq = torch.cat([self.token.expand(n, -1, -1), x], dim=1)
        return self.fc(seq.view(n, -1, 4).mean(dim=1))


def test_a_batch_1_sample_exports_with_an_open_batch(tmp_path, caplog):
    module = ClassToken().eval()
    with caplog.at_level(logging.INFO, logger="amalgam.exporters.torch_export"):
        path = export_torch(module, torch.randn(1, 5, 4), tmp_path / "v.onnx")
    assert "failed" not in caplog.text  # dynamo, no fallback
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_param
    for n in (1, 3):
        x = np.random.rand(n, 5, 4).astype(np.float32)
        with torch.no_grad():
            np.testing.assert_allclose(_ort(path, x)[0], module(torch.from_numpy(x)).numpy(), atol=1e-5)


def test_a_student_gets_no_legacy_fallback(tmp_path):
    with pytest.raises(ExportError, match=r"s\.onnx: the dynamo exporter cannot export SignSwitch: "):
        export_torch(SignSwitch(), torch.randn(2, 4), tmp_path / "s.onnx", fallback=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ("{image_size: 32}", "--kwargs '{image_size: 32}': expected a JSON object"),
        ('{"no_such_arg": 1}', "torch.nn:Linear: the factory failed with {'no_such_arg': 1}: TypeError: "),
    ],
)
def test_export_teacher_factory_kwargs_errors_are_one_line(tmp_path, capsys, kwargs, fragment):
    from tests.frameworks.cli import amalgam

    code, out = amalgam(
        capsys,
        "export-teacher",
        "torch",
        "torch.nn:Linear",
        "--kwargs",
        kwargs,
        "--input-shape",
        "1,3",
        "-o",
        tmp_path / "l.onnx",
    )
    assert code == 2 and out.err.startswith("error: ") and len(out.err.splitlines()) == 1
    assert fragment in out.err and list(tmp_path.iterdir()) == []


def test_export_teacher_passes_factory_kwargs(tmp_path, capsys):
    from tests.frameworks.cli import amalgam

    code, out = amalgam(
        capsys,
        "export-teacher",
        "torch",
        "torch.nn:Linear",
        "--kwargs",
        '{"in_features": 3, "out_features": 2}',
        "--input-shape",
        "1,3",
        "-o",
        tmp_path / "l.onnx",
    )
    assert code == 0 and out.err == ""
    assert _ort(tmp_path / "l.onnx", np.zeros((4, 3), np.float32))[0].shape == (4, 2)


def test_export_teacher_torch_from_a_factory_and_its_weights(tmp_path, capsys):
    """`amalgam export-teacher torch PKG.MODULE:FACTORY --weights W`: the factory's module
    with the saved weights, exported and stamped; weights of another model are refused."""
    from safetensors.torch import save_file

    from amalgam.toolkit.cli import main
    from tests.builders import PlainCNN

    torch.manual_seed(3)
    trained = randomize_bn(PlainCNN()).eval()
    save_file(trained.state_dict(), str(tmp_path / "cnn.safetensors"))
    out = tmp_path / "cnn.onnx"
    with pytest.raises(SystemExit) as done:
        main(
            [
                "export-teacher",
                "torch",
                "tests.builders:PlainCNN",
                "--weights",
                str(tmp_path / "cnn.safetensors"),
                "--input-shape",
                "1,1,28,28",
                "--tasks",
                "logits:a,b",
                "-o",
                str(out),
            ]
        )
    assert done.value.code == 0, capsys.readouterr().err
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        assert np.abs(_ort(out, x)[0] - trained(torch.from_numpy(x)).numpy()).max() < 1e-4
    assert [t["name"] for t in read_metadata(out)["tasks"]] == ["a", "b"]
    save_file(PlainCNN(channels=(4, 8)).state_dict(), str(tmp_path / "other.safetensors"))
    with pytest.raises(SystemExit) as refused:
        main(
            [
                "export-teacher",
                "torch",
                "tests.builders:PlainCNN",
                "--weights",
                str(tmp_path / "other.safetensors"),
                "--input-shape",
                "1,1,28,28",
                "-o",
                str(tmp_path / "x.onnx"),
            ]
        )
    assert refused.value.code == 2 and "weights do not match the model" in capsys.readouterr().err


def test_weights_without_state_dict_metadata_load_as_the_module_expects(tmp_path, capsys):
    """safetensors keeps no per-module ``version``; torchvision's MNASNet reads it while loading (and raised
    ValueError out of load_state_dict): the module's own metadata stands in."""
    import torchvision
    from safetensors.torch import save_file

    from amalgam.toolkit.cli import main

    torch.manual_seed(0)
    trained = torchvision.models.mnasnet0_5(num_classes=3).eval()
    save_file(trained.state_dict(), str(tmp_path / "m.safetensors"))
    out = tmp_path / "m.onnx"
    with pytest.raises(SystemExit) as done:
        main(
            [
                "export-teacher",
                "torch",
                "torchvision.models:mnasnet0_5",
                "--kwargs",
                '{"num_classes": 3}',
                "--weights",
                str(tmp_path / "m.safetensors"),
                "--input-shape",
                "1,3,32,32",
                "-o",
                str(out),
            ]
        )
    assert done.value.code == 0, capsys.readouterr().err
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        assert np.abs(_ort(out, x)[0] - trained(torch.from_numpy(x)).numpy()).max() < 1e-4
