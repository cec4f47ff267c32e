"""Cut a `.tflite` model at a single-tensor boundary into a head and a tail model.

Why: layer-wise split inference (Neurosurgeon-style) runs the first ops of a CNN on one
phone and the rest on another, so only one intermediate tensor crosses between them. Phones
run the parts with the stock `benchmark_model` (`--input_layer_value_files` in,
`--output_filepath` out), so each part must be an ordinary TFLite model. The flatbuffer
schema shipped with ai-edge-litert (`schema_py_generated`, object API) is enough to build
them: the head keeps the ops before the cut and outputs the cut tensor, the tail keeps the
ops after it and takes the cut tensor as its input; every other tensor and buffer that a
part does not use is dropped, and so are the signature defs and metadata (they describe the
whole model's inputs/outputs). The cut tensor is named plainly `cut` in both parts.

A *cut point* is a position k in the operator order (TFLite executes ops in that order)
such that exactly one non-constant tensor is both available after ops[:k] (a graph input or
produced by one of them) and needed by ops[k:] or the graph outputs. The ops before it then
depend on nothing after it, and the one tensor is all that crosses. Pure functions over
bytes; no device I/O.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import flatbuffers
from ai_edge_litert import schema_py_generated as schema

from adbflow.errors import CutError, ParseError
from adbflow.parsers.tflite_model import (
    DTYPES,
    FILE_IDENTIFIER,
    ints,
    is_constant,
    load_model,
    tensor_name,
    tensor_nbytes,
    tensor_shape,
)

CUT_TENSOR_NAME = "cut"


@dataclass(frozen=True)
class CutPoint:
    """A valid single-tensor boundary: ops[:op_index] form the head, ops[op_index:] the tail."""

    op_index: int
    tensor_index: int
    tensor_name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int

    def describe(self) -> str:
        return (f"cut {self.op_index}: tensor {self.tensor_index} {self.tensor_name!r} "
                f"{'x'.join(map(str, self.shape))} {self.dtype} ({self.nbytes} bytes)")


@dataclass(frozen=True)
class SplitModels:
    """The two parts of a cut, as .tflite bytes."""

    cut: CutPoint
    head: bytes
    tail: bytes


def model_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _load(data: bytes) -> schema.ModelT:
    """The model as mutable objects, checked to be cuttable."""
    try:
        model = load_model(data)
    except ParseError as exc:
        raise CutError(str(exc), hint="pass a readable .tflite model file") from None
    if len(model.subgraphs) > 1:
        raise CutError(f"model has {len(model.subgraphs)} subgraphs (control flow)",
                       hint="only single-subgraph models can be cut")
    if any(b.offset and b.offset > 1 for b in model.buffers or []):
        raise CutError("model keeps its buffers outside the flatbuffer",
                       hint="only models with inline buffers (< 2 GB) can be cut")
    return model


@lru_cache(maxsize=8)
def _model_cached(data: bytes) -> schema.ModelT:
    return _load(data)


def cut_points(data: bytes) -> list[CutPoint]:
    """Every valid single-tensor cut point of the model, in op order."""
    model = _model_cached(data)
    sg = model.subgraphs[0]
    ops = sg.operators or []
    n = len(ops)
    const = {i for i, t in enumerate(sg.tensors) if is_constant(model, t)}
    # last use of each tensor (n = needed as a graph output)
    last_use: dict[int, int] = {}
    for k, op in enumerate(ops):
        for t in ints(op.inputs) + ints(op.intermediates):
            if t >= 0 and t not in const:
                last_use[t] = k
    for t in ints(sg.outputs):
        last_use[t] = n
    live: set[int] = {t for t in ints(sg.inputs) if t not in const}
    points: list[CutPoint] = []
    seen: set[int] = set()
    for k in range(1, n):
        op = ops[k - 1]
        live |= {t for t in ints(op.outputs) if t >= 0 and t not in const}
        crossing = {t for t in live if last_use.get(t, -1) >= k}
        live = crossing
        if len(crossing) != 1:
            continue
        (t,) = crossing
        if t in ints(sg.inputs) or t in seen:
            continue
        seen.add(t)
        tensor = sg.tensors[t]
        nbytes = tensor_nbytes(tensor)
        if nbytes is None:
            continue
        points.append(CutPoint(k, t, tensor_name(tensor), tensor_shape(tensor),
                               DTYPES[tensor.type].name, nbytes))
    return points


def find_cut(data: bytes, op_index: int) -> CutPoint:
    points = cut_points(data)
    if not points:
        raise CutError("model has no valid single-tensor cut point",
                       hint="run it whole (--plan none)")
    for p in points:
        if p.op_index == op_index:
            return p
    raise CutError(f"op index {op_index} is not a valid cut point",
                   hint="valid: " + ", ".join(str(p.op_index) for p in points))


def _submodel(model: schema.ModelT, op_range: range, inputs: Sequence[int],
              outputs: Sequence[int], rename: dict[int, str]) -> bytes:
    """A model with only ops[op_range], the given graph inputs/outputs (old tensor indices),
    only the tensors and buffers those use (buffer 0 stays the empty sentinel)."""
    sg = model.subgraphs[0]
    ops = [sg.operators[i] for i in op_range]
    used: list[int] = []
    for t in list(inputs) + [x for op in ops for x in ints(op.inputs) + ints(op.outputs)
                             + ints(op.intermediates)] + list(outputs):
        if t >= 0 and t not in used:
            used.append(t)
    tmap = {old: new for new, old in enumerate(used)}
    new_buffers = [schema.BufferT()]
    bmap: dict[int, int] = {}
    new_tensors = []
    for old in used:
        src = sg.tensors[old]
        t = schema.TensorT()
        t.__dict__.update(src.__dict__)
        if src.buffer and src.buffer < len(model.buffers):
            if src.buffer not in bmap:
                bmap[src.buffer] = len(new_buffers)
                new_buffers.append(model.buffers[src.buffer])
            t.buffer = bmap[src.buffer]
        else:
            t.buffer = 0
        if old in rename:
            t.name = rename[old]
        new_tensors.append(t)
    new_ops = []
    for op in ops:
        o = schema.OperatorT()
        o.__dict__.update(op.__dict__)
        o.inputs = [tmap[x] if x >= 0 else -1 for x in ints(op.inputs)]
        o.outputs = [tmap[x] if x >= 0 else -1 for x in ints(op.outputs)]
        o.intermediates = [tmap[x] for x in ints(op.intermediates)] or None
        new_ops.append(o)
    used_codes = sorted({op.opcodeIndex for op in new_ops})
    cmap = {old: new for new, old in enumerate(used_codes)}
    for o in new_ops:
        o.opcodeIndex = cmap[o.opcodeIndex]
    out_sg = schema.SubGraphT()
    out_sg.tensors = new_tensors
    out_sg.inputs = [tmap[i] for i in inputs]
    out_sg.outputs = [tmap[i] for i in outputs]
    out_sg.operators = new_ops
    out_sg.name = sg.name
    m = schema.ModelT()
    m.version = model.version
    m.operatorCodes = [model.operatorCodes[i] for i in used_codes]
    m.subgraphs = [out_sg]
    m.description = model.description
    m.buffers = new_buffers
    m.signatureDefs = None
    m.metadata = None
    m.metadataBuffer = None
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(m.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def split_model(data: bytes, op_index: int, *, input_name: str | None = None) -> SplitModels:
    """Head (ops before the cut, output `cut`) and tail (input `cut`, the model's outputs).
    `input_name` renames the head's input (tool flags split names on ',' and ':')."""
    cut = find_cut(data, op_index)
    model = _load(data)     # a fresh copy: _submodel must not share mutable state with the cache
    sg = model.subgraphs[0]
    n = len(sg.operators)
    rename = {cut.tensor_index: CUT_TENSOR_NAME}
    if input_name:
        rename.update({i: input_name for i in ints(sg.inputs)})
    head = _submodel(model, range(0, cut.op_index), ints(sg.inputs), [cut.tensor_index], rename)
    tail = _submodel(model, range(cut.op_index, n), [cut.tensor_index], ints(sg.outputs), rename)
    return SplitModels(cut, head, tail)
