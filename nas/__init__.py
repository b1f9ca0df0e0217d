"""effnas: search EfficientNet scaling coefficients and architectures, then build model families.

The public Python API (docs/python.md): load a study, run it, read its verdict and trials, materialize a
family, build a model from a spec, count its FLOPs and activations, measure its latency, and export a
family as a plain-PyTorch module or ONNX files.

    import nas
    result = nas.run_study("quickstart")
    print(result.verdict)
    family = nas.materialize(result, phis=range(4))
    model = nas.build_model(family[3], num_classes=10)

Every name is imported on first use (PEP 562), so `import nas` and `nas --help` load no torch, Optuna or
pandas. A public name never repeats a submodule's (nas.family is the module, nas.materialize the function):
the import system would replace one with the other.
"""

import importlib as _importlib
import typing as _typing

__version__ = "0.1.0"

_WHERE = {
    # public name: "module" (the same name there) or "module:name"
    "load_study": "nas.study",
    "run_study": "nas.study",
    "study_result": "nas.study",
    "StudyResult": "nas.study",
    "Coefficients": "nas.study",
    "materialize": "nas.study",
    "Family": "nas.study",
    "StudyConfig": "nas.config",
    "LatencySettings": "nas.config",
    "NetworkSpec": "nas.spec",
    "load_spec": "nas.spec",
    "build_model": "nas.builder",
    "count_flops": "nas.flops",
    "measure_latency": "nas.latency:measure_spec",
    "NasError": "nas.errors",
    "export_pytorch": "nas.export.pytorch",
    "export_onnx": "nas.export.onnx",
}

__all__ = [
    "Coefficients", "Family", "LatencySettings", "NasError", "NetworkSpec", "StudyConfig", "StudyResult",
    "build_model", "count_flops", "export_onnx", "export_pytorch", "load_spec", "load_study", "materialize",
    "measure_latency", "run_study", "study_result",
]

if _typing.TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on first use
    from nas.builder import build_model as build_model
    from nas.config import LatencySettings as LatencySettings
    from nas.config import StudyConfig as StudyConfig
    from nas.errors import NasError as NasError
    from nas.export.onnx import export_onnx as export_onnx
    from nas.export.pytorch import export_pytorch as export_pytorch
    from nas.flops import count_flops as count_flops
    from nas.latency import measure_spec as measure_latency
    from nas.spec import NetworkSpec as NetworkSpec
    from nas.spec import load_spec as load_spec
    from nas.study import Coefficients as Coefficients
    from nas.study import Family as Family
    from nas.study import StudyResult as StudyResult
    from nas.study import load_study as load_study
    from nas.study import materialize as materialize
    from nas.study import run_study as run_study
    from nas.study import study_result as study_result


def __getattr__(name: str) -> object:
    """Import a public name's module on first use and keep the name here."""
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'nas' has no attribute {name!r}")
    module, _, attribute = where.partition(":")
    value = getattr(_importlib.import_module(module), attribute or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
