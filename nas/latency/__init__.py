"""Measured inference latency of a real module on a device, and a per-block lookup table that predicts it.

Protocol (measure): eval mode, no grad, a fixed batch of random input, `warmup` untimed runs, then `repeats`
timed runs; report the median and the spread (10th and 90th percentiles). On CPU a fixed thread count keeps
figures comparable across runs; on CUDA, events time the GPU work itself, with one synchronisation per run.
With `runtime="onnxruntime"` the module is exported to ONNX (opset 17) and the same protocol times an ONNX
Runtime CPU session instead of eager PyTorch; `precision` and `cuda_graph` time a model as it is served: in
bf16, and replayed from a captured CUDA graph (runtimes).

The lookup table (table: `LatencyTable`) times each distinct piece of a network (pieces: stem, every block,
head) once, alone, on an input of the shape it sees inside the network, and predicts a network's latency from
the sum of its pieces: a network is then costed without being built or run. The sum ignores what happens
between blocks (cache reuse, operator fusion, per-call overhead); a calibration fitted on whole networks
corrects it, and evaluate measures what is left on networks the table never saw. study_table is the table a
coefficient search predicts from. docs/latency.md has the protocol and figures.
"""

from nas.latency.evaluate import build_calibrated_table, sample_networks
from nas.latency.measure import (
    Latency,
    forget_measurements,
    measure_module,
    measure_modules,
    measure_networks,
    measure_spec,
    measure_specs,
    measurement_conditions,
)
from nas.latency.study_table import search_table, table_path
from nas.latency.table import LatencyTable, build_table

__all__ = [
    "Latency", "LatencyTable", "build_calibrated_table", "build_table", "forget_measurements", "measure_module",
    "measure_modules", "measure_networks", "measure_spec", "measure_specs", "measurement_conditions",
    "sample_networks", "search_table", "table_path",
]
