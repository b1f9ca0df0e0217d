"""A family that leaves effnas: the standalone PyTorch module and the ONNX files, checked against effnas itself.

Parity is judged where it matters: the module runs in a Python process where `nas` cannot be imported, builds
exactly effnas's parameter count, loads effnas's state dict strictly and gives the same logits within 1e-5;
ONNX Runtime's logits are within 1e-4 of PyTorch's. The weights are effnas's own initialisation with batch-norm
statistics measured on random images (nas.export.onnx.trained_scale), so that logits are of order 1 and a
difference means something (as built, B0's logits are near 1e-13). Networks are compared at 32 px."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace

import onnx
import onnxruntime as ort
import pytest
import torch

from nas.builder import build_model, count_params
from nas.errors import NasError
from nas.export.onnx import export_model_onnx, export_onnx, trained_scale
from nas.export.pytorch import TEMPLATE, export_pytorch, module_name, module_source
from nas.family import compound_family, paper_family, write_family
from nas.scaling import scale
from nas.space import export_spec, load_space
from nas.spec import load_spec, save_spec

RESOLUTION = 32
CLASSES = 10

# A block-level space whose chosen network uses what a spec can say beyond B0: hardswish, stem stride 1, kernel 7,
# expansion 1 to 4, SE 0 / 0.25 / 0.5 by stage, Fused-MBConv with and without expansion, no dropout.
BLOCK_SPACE = """\
name: blocky
resolution: 64
activation: hardswish
drop_connect: 0.1
dropout: 0.0
stem: {channels: 16, stride: 1}
head: {channels: 256}
stages:
  - {block: mbconv, expand: 1, kernel: 3, stride: 1, channels: 16, repeats: 1, se: 0.25}
  - {block: mbconv, expand: 6, kernel: 3, stride: 2, channels: 24, repeats: 2, se: 0.25}
  - {block: mbconv, expand: 6, kernel: 5, stride: 2, channels: 40, repeats: 2, se: 0.25}
  - {block: mbconv, expand: 6, kernel: 3, stride: 2, channels: 80, repeats: 2, se: 0.25}
choices:
  kernel: [3, 5, 7]
  expand: [1, 3, 4]
  se: [0.0, 0.5]
  block: [mbconv, fused_mbconv]
"""
BLOCK_PICKS = {"s0_block": "fused_mbconv", "s0_expand": 1, "s0_se": 0.0,
               "s1_block": "fused_mbconv", "s1_expand": 4, "s1_kernel": 3, "s1_se": 0.0,
               "s2_kernel": 7, "s2_expand": 3, "s2_se": 0.5, "s2_repeats": 3,
               "s3_kernel": 5, "s3_expand": 4, "s3_se": 0.0}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: these small forwards gain nothing from two, and on cores shared with other work a
    second thread waiting on the first made the module's setup ten times slower (55 s instead of 4)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _families(tmp_path):
    """{module name: (members, in_channels)}: the paper's B0-B3, a searched family, Lite, V2-S (at half its width
    and depth: Fused-MBConv and MBConv stages, 3.3 M parameters instead of 21.5 M) and an exported
    block-level network (through `nas arch export`'s own functions: BlockSpace.apply, export_spec, save_spec)."""
    b0 = load_spec("efficientnet_b0")
    space_file = tmp_path / "blocky_space.yaml"
    space_file.write_text(BLOCK_SPACE)
    chosen = load_space(space_file).apply(BLOCK_PICKS)
    found = load_spec(save_spec(export_spec(chosen, "found", "trial 0 of a block-level study"),
                                tmp_path / "found.yaml"))
    return {
        "paper": (paper_family(b0, [0, 1, 2, 3]), 3),
        "searched": (compound_family(b0, 1.2, 1.1, 1.15, [0, 1, 2]), 3),
        "lite": (compound_family(load_spec("efficientnet_lite0"), 1.2, 1.1, 1.15, [0, 1]), 3),
        "v2s": ([(0.0, scale(load_spec("efficientnetv2_s"), 0.5, 0.5, RESOLUTION, name="v2s-half"))], 3),
        "found": (compound_family(found, 1.2, 1.1, 1.15, [0, 1]), 1),
    }


def _effnas_model(spec, in_channels, resolution=RESOLUTION, count=2):
    """(effnas's network at a trained one's scale, the `count` images its batch norms measured, whose logits
    then spread by 1)."""
    torch.manual_seed(0)
    images = torch.randn(count, in_channels, resolution, resolution, generator=torch.Generator().manual_seed(1))
    return trained_scale(build_model(spec, CLASSES, in_channels), images), images


# Runs in a process where `import nas` fails: the module must build, load and run on torch alone.
STANDALONE_CHECK = textwrap.dedent("""\
    import importlib.abc, json, sys

    class NoEffnas(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "nas" or name.startswith("nas."):
                raise ImportError(f"effnas is not installed here ({name})")

    sys.meta_path.insert(0, NoEffnas())
    try:
        import nas
    except ImportError:
        pass
    else:
        raise SystemExit("nas is importable: the check would prove nothing")
    folder = sys.argv[1]
    sys.path.insert(0, folder)
    import importlib
    import torch
    torch.set_num_threads(1)
    results = {}
    for family in json.loads(sys.argv[2]):
        module = importlib.import_module(family)
        for name in module.MEMBERS:
            io = torch.load(f"{folder}/{name}.io.pt")
            model = module.build(name, num_classes=io["classes"], in_channels=io["in_channels"])
            params = sum(p.numel() for p in model.parameters())
            model.load_state_dict(torch.load(f"{folder}/{name}.pt"), strict=True)
            with torch.no_grad():
                logits = model.eval()(io["x"])
            results[name] = {"params": params, "diff": (logits - io["logits"]).abs().max().item(),
                             "scale": io["logits"].abs().max().item(), "family": family}
    assert not [m for m in sys.modules if m == "nas" or m.startswith("nas.")]
    print(json.dumps(results))
""")


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """(effnas's parameter counts by member, what the standalone modules gave in a process without nas)."""
    tmp = tmp_path_factory.mktemp("standalone")
    expected, modules = {}, []
    for family, (members, in_channels) in _families(tmp).items():
        modules.append(family)
        export_pytorch(members, tmp / f"{family}.py", num_classes=1000)
        for _, spec in members:
            model, x = _effnas_model(spec, in_channels)
            with torch.no_grad():
                logits = model(x)
            torch.save(model.state_dict(), tmp / f"{spec.name}.pt")
            torch.save({"x": x, "logits": logits, "classes": CLASSES, "in_channels": in_channels},
                       tmp / f"{spec.name}.io.pt")
            expected[spec.name] = (family, count_params(model))
    run = subprocess.run([sys.executable, "-I", "-c", STANDALONE_CHECK, str(tmp), json.dumps(modules)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return expected, json.loads(run.stdout)


@pytest.mark.parametrize("family", ["paper", "searched", "lite", "v2s", "found"])
def test_standalone_module_matches_effnas_without_nas(standalone, family):
    expected, got = standalone
    names = [n for n, (f, _) in expected.items() if f == family]
    assert names and all(got[n]["family"] == family for n in names)
    for name in names:
        assert got[name]["params"] == expected[name][1], name
        assert got[name]["scale"] > 0.1, name                 # logits that mean something
        assert got[name]["diff"] <= 1e-5, (name, got[name])


def test_paper_b0_b3_parameter_counts_are_the_references(standalone):
    """Through the standalone module, with 1000 classes: torchvision's B0..B3 counts."""
    expected, got = standalone
    ten = {n: p for n, (f, p) in expected.items() if f == "paper"}
    head_1000 = {"efficientnet_b0-B0": 5_288_548, "efficientnet_b0-B1": 7_794_184,
                 "efficientnet_b0-B2": 9_109_994, "efficientnet_b0-B3": 12_233_232}
    heads = {"efficientnet_b0-B0": 1280, "efficientnet_b0-B1": 1280, "efficientnet_b0-B2": 1408,
             "efficientnet_b0-B3": 1536}
    for name, params in head_1000.items():      # 990 fewer classes: 990 x (head + 1) fewer parameters
        assert got[name]["params"] == ten[name] == params - 990 * (heads[name] + 1)


def test_module_is_the_template_with_the_members_written_in(tmp_path):
    members = paper_family(load_spec("efficientnet_b0"), [0, 3])
    path = export_pytorch(members, tmp_path / "b0.py", num_classes=7)
    text, template = path.read_text(), TEMPLATE.read_text()
    table = template.index("\nNUM_CLASSES = "), template.index("\n\n\nif __name__")
    assert text.startswith(template[:table[0]]) and text.endswith(template[table[1]:])    # the code is the template's
    assert "import nas" not in text and "from nas" not in text
    namespace: dict = {}
    exec(compile(text, str(path), "exec"), namespace)
    assert list(namespace["MEMBERS"]) == ["efficientnet_b0-B0", "efficientnet_b0-B3"]
    b3 = namespace["MEMBERS"]["efficientnet_b0-B3"]
    assert (b3["width"], b3["depth"], b3["resolution"], b3["dropout"], b3["stem"], b3["head"]) == (
        1.2, 1.4, 300, 0.3, 40, 1536)
    assert b3["stages"][0] == {"block": "mbconv", "expand": 1, "kernel": 3, "stride": 1, "channels": 24,
                               "repeats": 2, "se": 0.25}
    assert namespace["build"]("efficientnet_b0-B0").classifier.out_features == 7      # --num-classes
    with pytest.raises(KeyError, match="no member 'B9'"):
        namespace["build"]("B9")
    assert module_name("my-net.v2") == "my_net_v2" and module_name("3net") == "_3net"
    with pytest.raises(NasError, match="two members are named"):
        module_source(members + members[:1])


def test_onnx_matches_pytorch_in_onnx_runtime(tmp_path):
    """Two members (B0 and the block-level network): opset 17, batch 1, and ONNX Runtime's logits within 1e-4
    of PyTorch's, on the image the export traced and checked and on three others. At 64 px, with batch norms
    measured on those four images: at 32 px the last stage is 1 x 1 and its statistics, from four values a
    channel, make other images' logits large (B0 and ONNX Runtime then agree to 5e-6 of them, not 1e-4)."""
    families = _families(tmp_path)
    for spec, in_channels in ((families["paper"][0][0][1], 3), (families["found"][0][0][1], 1)):
        model, images = _effnas_model(spec, in_channels, resolution=64, count=4)
        path = tmp_path / f"{spec.name}.onnx"
        reported = export_model_onnx(model, path, images[:1])
        assert 0 <= reported <= 1e-4
        graph = onnx.load(str(path))
        assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [17]
        dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
        assert dims == [1, in_channels, 64, 64]
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for image in images.split(1):
            with torch.no_grad():
                expected = model(image)
            (got,) = session.run(None, {session.get_inputs()[0].name: image.numpy()})
            assert expected.abs().max() > 0.1
            assert (torch.from_numpy(got) - expected).abs().max() <= 1e-4


TINY = """\
name: tiny
resolution: 32
stem: {channels: 8}
head: {channels: 64}
stages:
  - {block: fused_mbconv, expand: 2, kernel: 3, stride: 2, channels: 16, repeats: 1}
  - {block: mbconv, expand: 4, kernel: 5, stride: 2, channels: 24, repeats: 2, se: 0.25}
"""


def test_cli_exports_pytorch_and_onnx(run_cli, tmp_path):
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY)
    out = tmp_path / "fam"
    code, _, err = run_cli("materialize", "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15", "--phi", "0,1",
                           "--space", space, "--out", out, "--export", "pytorch", "--export", "onnx",
                           "--num-classes", "5", "--quiet", "--format", "csv")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["tiny-phi0.onnx", "tiny-phi0.yaml", "tiny-phi1.onnx",
                                                      "tiny-phi1.yaml", "tiny.py"]
    assert f"wrote {out / 'tiny.py'}: 2 members in plain PyTorch, each made by tiny.build(name)" in err
    checks = [line for line in err.splitlines() if "ONNX Runtime's logits match PyTorch's within" in line]
    assert len(checks) == 2 and "1 x 3 x 37 x 37" in checks[1]       # phi 1: 32 x 1.15 px
    session = ort.InferenceSession(str(out / "tiny-phi1.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].shape == [1, 5]
    # the module builds what the spec files describe, with --num-classes as its default
    namespace: dict = {}
    exec((out / "tiny.py").read_text(), namespace)
    assert count_params(namespace["build"]("tiny-phi1")) == count_params(
        build_model(load_spec(out / "tiny-phi1.yaml"), 5))


@pytest.mark.parametrize("args, match", [
    (["--export", "pytorch"], "--export pytorch needs --out DIR"),
    (["--export", "tflite", "--out", "x"], "--export tflite: choose pytorch or onnx"),
    (["--export", "pytorch", "--out", "x", "--num-classes", "0"], "--num-classes 0: give 1..100,000"),
    (["--save-models", "--out", "x"], "unrecognized arguments: --save-models"),
])
def test_export_flags_are_checked_before_any_work(run_cli, tmp_path, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("materialize", "--preset", "paper", "--phi", "0", *args)
    assert (code, out) == (2, "") and match in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_hostile_network_names_write_nothing_outside_the_folder(run_cli, tmp_path):
    """A base network named ../../x (issue 23): one line, exit 2, nothing written anywhere; a spec renamed in
    code is refused by the writers themselves; `nas arch export --name ../x` is refused where it is saved."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    for name in ("../../x", "/tmp/x", "..", ".hidden", "a\\b", "x" * 201, "é" * 101):
        bad = work / "bad.yaml"
        bad.write_text(TINY.replace("name: tiny", f"name: {json.dumps(name)}"))
        code, out, err = run_cli("materialize", "--preset", "paper", "--phi", "0", "--space", bad,
                                 "--out", work / "fam", "--export", "pytorch,onnx")
        assert (code, out) == (2, "") and err.count("\n") == 1, (name, err)
        assert "field 'name'" in err and "must be a file name" in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "bad.yaml"]

    space = work / "tiny.yaml"
    space.write_text(TINY)
    hostile = [(0.0, replace(load_spec(space), name="../../escaped"))]     # no validation on this path
    with pytest.raises(NasError, match="network name '../../escaped' cannot name a file in"):
        write_family(hostile, work / "fam")
    with pytest.raises(NasError, match="cannot name a file"):
        export_onnx(hostile, work / "fam")
    with pytest.raises(NasError, match=r"field 'name' is '../x': must be a file name"):
        save_spec(export_spec(load_spec(space), "../x", "trial 0"), work / "found.yaml")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "bad.yaml", "tiny.yaml"]


def test_onnx_export_without_onnxruntime_is_one_line_before_any_work(run_cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)        # import onnxruntime now fails
    code, out, err = run_cli("materialize", "--preset", "paper", "--phi", "0", "--export", "onnx",
                             "--out", tmp_path / "fam")
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert "ONNX export needs the onnx and onnxruntime packages: pip install onnx onnxruntime" in err
    assert not (tmp_path / "fam").exists()
