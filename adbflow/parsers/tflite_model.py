"""Read a `.tflite` flatbuffer: operators in execution order, tensors, a per-op cost estimate.

Why a parser: the model file is input like device output is (a model pushed to a phone,
a model a user names); both the split planner (adbflow.split) and the fleet's
benchmark_model stand-in need the same facts about it, and neither may depend on the
other. Uses the flatbuffer schema that ai-edge-litert ships (`schema_py_generated`, object
API); unreadable files raise ParseError.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from adbflow.errors import ParseError

FILE_IDENTIFIER = b"TFL3"

DTYPES: dict[int, np.dtype] = {
    schema.TensorType.FLOAT32: np.dtype(np.float32), schema.TensorType.FLOAT16: np.dtype(np.float16),
    schema.TensorType.INT32: np.dtype(np.int32), schema.TensorType.UINT8: np.dtype(np.uint8),
    schema.TensorType.INT64: np.dtype(np.int64), schema.TensorType.INT16: np.dtype(np.int16),
    schema.TensorType.INT8: np.dtype(np.int8), schema.TensorType.FLOAT64: np.dtype(np.float64),
    schema.TensorType.BOOL: np.dtype(np.bool_), schema.TensorType.UINT32: np.dtype(np.uint32),
    schema.TensorType.UINT16: np.dtype(np.uint16),
}
_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


@dataclass(frozen=True)
class OpInfo:
    """One operator of subgraph 0, in execution order, with a rough cost estimate."""

    index: int
    node_type: str
    output_name: str
    cost: float        # multiply-accumulates + elements touched: apportions measured time

    @property
    def profile_name(self) -> str:
        """The [Name] column benchmark_model's op profiler prints for a CPU kernel."""
        return f"[{self.output_name}]:{self.index}"


def load_model(data: bytes) -> schema.ModelT:
    """The whole model as mutable objects (a fresh copy every call)."""
    if len(data) < 8 or bytes(data[4:8]) != FILE_IDENTIFIER:
        raise ParseError("tflite", "not a TFLite flatbuffer (no TFL3 identifier)", repr(bytes(data[:16])))
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as exc:  # a corrupt flatbuffer raises anything from struct to index errors
        raise ParseError("tflite", f"cannot read the flatbuffer: {exc}", repr(bytes(data[:16]))) from None
    if not model.subgraphs:
        raise ParseError("tflite", "model has no subgraph", "")
    return model


@lru_cache(maxsize=8)
def cached_model(data: bytes) -> schema.ModelT:
    """load_model, cached: callers must not modify the result."""
    return load_model(data)


def ints(arr) -> list[int]:
    return [] if arr is None else [int(x) for x in arr]


def is_constant(model: schema.ModelT, tensor: schema.TensorT) -> bool:
    buf = model.buffers[tensor.buffer] if 0 < tensor.buffer < len(model.buffers) else None
    return buf is not None and buf.data is not None and len(buf.data) > 0


def tensor_name(tensor: schema.TensorT) -> str:
    n = tensor.name
    return n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n or "")


def tensor_shape(tensor: schema.TensorT) -> tuple[int, ...]:
    return tuple(int(x) for x in (tensor.shape if tensor.shape is not None else ()))


def tensor_nbytes(tensor: schema.TensorT) -> int | None:
    dtype = DTYPES.get(tensor.type)
    if dtype is None:
        return None
    return int(np.prod(tensor_shape(tensor), dtype=np.int64)) * dtype.itemsize


def op_name(model: schema.ModelT, op: schema.OperatorT) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    if builtin == schema.BuiltinOperator.CUSTOM:
        cc = code.customCode
        return cc.decode("utf-8", "replace") if isinstance(cc, bytes) else str(cc or "CUSTOM")
    return _OP_NAMES.get(builtin, f"OP_{builtin}")


def _cost(name: str, ins: list[tuple[tuple[int, ...], bool]],
          outs: list[tuple[tuple[int, ...], bool]]) -> float:
    elems = sum(int(np.prod(shape)) for shape, const in ins + outs if not const)
    out_elems = sum(int(np.prod(shape)) for shape, _ in outs)
    macs = 0
    if len(ins) >= 2:
        w = ins[1][0]
        if name == "CONV_2D" and len(w) == 4:              # [out, kh, kw, in]
            macs = out_elems * w[1] * w[2] * w[3]
        elif name == "DEPTHWISE_CONV_2D" and len(w) == 4:  # [1, kh, kw, out]
            macs = out_elems * w[1] * w[2]
        elif name == "FULLY_CONNECTED" and len(w) == 2:    # [out, in]
            macs = out_elems * w[1]
    return float(macs + elems)


@lru_cache(maxsize=8)
def op_infos(data: bytes) -> list[OpInfo]:
    """Every operator of subgraph 0 in execution order: type, first output name, cost.

    Read with the lazy flatbuffer accessors (no copy of the weights): the benchmark_model
    stand-in calls this on every launch, for its graph and the profile's classifier."""
    if len(data) < 8 or bytes(data[4:8]) != FILE_IDENTIFIER:
        raise ParseError("tflite", "not a TFLite flatbuffer (no TFL3 identifier)", repr(bytes(data[:16])))
    try:
        m = schema.Model.GetRootAs(data, 0)
        sg = m.Subgraphs(0)
        codes = []
        for i in range(m.OperatorCodesLength()):
            oc = m.OperatorCodes(i)
            builtin = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
            cc = oc.CustomCode()
            codes.append((cc.decode("utf-8", "replace") if cc else "CUSTOM")
                         if builtin == schema.BuiltinOperator.CUSTOM
                         else _OP_NAMES.get(builtin, f"OP_{builtin}"))
        cache: dict[int, tuple[tuple[int, ...], bool, str]] = {}

        def tensor(i: int) -> tuple[tuple[int, ...], bool, str]:
            if i not in cache:
                t = sg.Tensors(i)
                shape = tuple(int(x) for x in t.ShapeAsNumpy()) if t.ShapeLength() else ()
                buf = t.Buffer()
                const = 0 < buf < m.BuffersLength() and m.Buffers(buf).DataLength() > 0
                name = t.Name()
                cache[i] = (shape, const, name.decode("utf-8", "replace") if name else "")
            return cache[i]
        out = []
        for k in range(sg.OperatorsLength()):
            op = sg.Operators(k)
            ins = [tensor(int(i)) for i in (op.InputsAsNumpy() if op.InputsLength() else []) if i >= 0]
            outs = [tensor(int(i)) for i in (op.OutputsAsNumpy() if op.OutputsLength() else []) if i >= 0]
            name = codes[op.OpcodeIndex()]
            out.append(OpInfo(k, name, outs[0][2] if outs else "",
                              _cost(name, [(x[0], x[1]) for x in ins], [(x[0], x[1]) for x in outs])))
        return out
    except ParseError:
        raise
    except Exception as exc:  # a corrupt flatbuffer raises anything from struct to index errors
        raise ParseError("tflite", f"cannot read the flatbuffer: {exc}", repr(bytes(data[:16]))) from None


def model_cost(data: bytes) -> float:
    return sum(o.cost for o in op_infos(data))


def op_weight_bytes(data: bytes) -> list[int]:
    """Bytes of constant data (weights) each op brings into a model that contains it: a
    buffer counts at the first op that reads it. Sums over an op range approximate the
    size of a part cut from the model (what loading it costs)."""
    model = cached_model(data)
    sg = model.subgraphs[0]
    seen: set[int] = set()
    out = []
    for op in sg.operators or []:
        n = 0
        for i in ints(op.inputs):
            if i < 0:
                continue
            t = sg.tensors[i]
            if is_constant(model, t) and t.buffer not in seen:
                seen.add(t.buffer)
                n += len(model.buffers[t.buffer].data)
        out.append(n)
    return out
