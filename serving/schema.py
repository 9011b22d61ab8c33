"""The model's input contract (from its MLflow signature) and the validation of requests against it.

A :class:`TensorSpec` says what one input tensor must look like (dtype, shape with -1 for "any"). From it
:class:`PredictDecoder` builds the strict /predict parser (msgspec: typed JSON decoding at a few microseconds
per request): wrong shapes, dtypes and out-of-range values are rejected with the exact location
(``$.inputs[2][7]``) and what was expected. :func:`predict_request_model` builds the matching pydantic model
that documents the route in OpenAPI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import numpy as np
from annotated_types import Len
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from mlplat.serving.flat_rows import FlatRowsParser, flat_floats

# KServe V2 / Open Inference Protocol tensor datatypes and the numpy dtypes they map to.
V2_DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_DATATYPE_OF = {dtype: name for name, dtype in V2_DATATYPES.items()}


class InputError(ValueError):
    """A request's inputs do not match what the model accepts; the message says where and what is allowed."""


def v2_datatype(dtype: np.dtype[Any]) -> str:
    """The V2 protocol name of a numpy dtype (FP32 for float32, ...)."""
    try:
        return _DATATYPE_OF[np.dtype(dtype)]
    except KeyError:
        raise InputError(f"dtype {dtype} has no KServe V2 datatype") from None


@dataclass(frozen=True)
class TensorSpec:
    """One tensor's contract: name, numpy dtype and shape; the first dimension is the batch, -1 means any."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]

    @property
    def row_shape(self) -> tuple[int, ...]:
        """The shape of one row (everything after the batch dimension)."""
        return self.shape[1:]

    @property
    def datatype(self) -> str:
        """The V2 datatype name (FP32, INT64, ...)."""
        return v2_datatype(self.dtype)

    def describe_row(self) -> str:
        """Human description of one row, e.g. `256 float32 values` or `float32 array of shape [3, 32, 32]`."""
        dims = ["any" if d == -1 else str(d) for d in self.row_shape]
        if len(dims) == 1:
            return f"{dims[0]} {self.dtype} values" if dims[0] != "any" else f"a list of {self.dtype} values"
        if not dims:
            return f"one {self.dtype} value"
        return f"a {self.dtype} array of shape [{', '.join(dims)}]"

    def check_row_shape(self, row_shape: Sequence[int]) -> None:
        """Raise :class:`InputError` unless `row_shape` fits this spec's row shape (-1 matches any size)."""
        want = self.row_shape
        if len(row_shape) != len(want) or any(w not in (-1, g) for w, g in zip(want, row_shape, strict=True)):
            shown = ", ".join("any" if d == -1 else str(d) for d in want)
            raise InputError(f"each row must have shape [{shown}] ({self.describe_row()}), got {list(row_shape)}")


def _element_type(dtype: np.dtype[Any]) -> Any:
    kind = dtype.kind
    if kind == "b":
        return bool
    if kind in "iu":
        return int
    if kind == "f":
        return float
    raise InputError(f"unsupported input dtype {dtype}: mlplat serves bool, integer and floating-point tensors")


def predict_request_model(spec: TensorSpec | None, max_rows: int) -> type[BaseModel]:
    """The pydantic model that documents `POST /predict` in OpenAPI, with the rows `spec` requires.

    It describes what :class:`PredictDecoder` enforces: known dimensions as exact list lengths, the element
    type (JSON ints accepted for floats; strings, bools-for-numbers, NaN and Infinity not).
    """
    row: Any
    if spec is None:
        row = Any
    else:
        row = _element_type(spec.dtype)
        for dim in reversed(spec.row_shape):
            row = list[row] if dim == -1 else Annotated[list[row], Len(dim, dim)]
    inputs = Annotated[
        list[row],
        Field(min_length=1, max_length=max_rows, description="Rows to predict, one per example."),
    ]
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(strict=True, allow_inf_nan=False, title="PredictRequest"),
        inputs=(inputs, ...),
    )


class PredictDecoder:
    """Parses a `/predict` body into a numpy array of the spec's dtype, or raises :class:`InputError`.

    The msgspec type mirrors :func:`predict_request_model`: exact row lengths where the spec fixes them, JSON
    ints accepted for floats, no bools for numbers, no fractions for ints, and values bounded by the dtype's
    range, so the array needs no further checks. Rows of one fixed width of floats, the common case, are first
    offered to :class:`~mlplat.serving.flat_rows.FlatRowsParser`, which returns the same array for the bodies this
    decoder accepts, in about half the time, and leaves every other body to it.
    """

    def __init__(self, spec: TensorSpec | None, max_rows: int) -> None:
        self.spec = spec
        row: Any = Any
        if spec is not None:
            row = _element_type(spec.dtype)
            if spec.dtype.kind != "b":
                info = np.finfo(spec.dtype) if spec.dtype.kind == "f" else np.iinfo(spec.dtype)
                row = Annotated[row, msgspec.Meta(ge=row(info.min), le=row(info.max))]
            for dim in reversed(spec.row_shape):
                row = list[row] if dim == -1 else Annotated[list[row], msgspec.Meta(min_length=dim, max_length=dim)]
        inputs = Annotated[list[row], msgspec.Meta(min_length=1, max_length=max_rows)]
        request = msgspec.defstruct("PredictRequest", [("inputs", inputs)])
        self._decoder = msgspec.json.Decoder(request)
        self._flat_rows = FlatRowsParser.for_spec(spec, max_rows)
        if spec is None:
            self._expected = 'expected {"inputs": [row, ...]} with rows of numbers'
        else:
            self._expected = f'expected {{"inputs": [row, ...]}} where each row is {spec.describe_row()}'

    def decode(self, body: bytes) -> np.ndarray:
        """The rows of a `/predict` body as an array (first dimension: rows)."""
        if self._flat_rows is not None:
            array = self._flat_rows.parse(body)
            if array is not None:
                return array
        return self.decode_strict(body)

    def decode_strict(self, body: bytes) -> np.ndarray:
        """:meth:`decode` by msgspec alone: every body, valid or not (the error says where and what is expected)."""
        try:
            rows = self._decoder.decode(body).inputs  # type: ignore[attr-defined]
        except msgspec.ValidationError as exc:
            raise InputError(f"{exc}. {self._expected}") from None
        except msgspec.DecodeError as exc:
            raise InputError(f"the body is not valid JSON ({exc}). {self._expected}") from None
        return rows_to_array(rows, self.spec)


def rows_to_array(rows: list[Any], spec: TensorSpec | None) -> np.ndarray:
    """Rows already checked against `spec` (by :class:`PredictDecoder`) -> an array of the spec's dtype.

    Without a spec: numbers or booleans of one shape, floats as float32.
    """
    if spec is not None:
        try:
            return np.asarray(rows, dtype=spec.dtype)
        except ValueError as exc:  # ragged rows, possible only where a dimension is "any"
            raise InputError(f"inputs do not form a {spec.dtype} tensor: {exc}") from None
    else:
        try:
            array = np.asarray(rows)
        except ValueError as exc:
            raise InputError(f"inputs must be rows of equal shape: {exc}") from None
        if array.dtype.kind not in "biuf":
            raise InputError(f"inputs must be numbers or booleans, got {array.dtype} values")
        if array.dtype.kind == "f":
            array = array.astype(np.float32)
            if not np.isfinite(array).all():
                raise InputError("inputs contain values that overflow float32 (finite numbers only)")
    return array


# A JSON number takes at most this many bytes with its separator and some whitespace ("-1.2345678901234567e-308, "
# is 26): bodies larger than the model's rows allow are refused by size, before they are parsed.
MAX_BYTES_PER_VALUE = 48
BODY_OVERHEAD_BYTES = 64 * 1024  # the envelope: names, ids, parameters, brackets


def body_limit(spec: TensorSpec | None, max_rows: int, max_body_bytes: int) -> int:
    """The largest body a request for `spec` can legitimately need: the work a request may cost, bounded by
    the model's row width and the row limit before anything is parsed (never above `max_body_bytes`)."""
    if spec is None or any(d < 0 for d in spec.row_shape):
        return max_body_bytes
    values = max_rows * math.prod(spec.row_shape)
    return min(max_body_bytes, BODY_OVERHEAD_BYTES + values * MAX_BYTES_PER_VALUE)


class V2Input(msgspec.Struct, forbid_unknown_fields=False):
    """One input tensor of a V2 request; `data` stays raw JSON until its datatype and size are checked."""

    name: str
    shape: Annotated[list[int], msgspec.Meta(min_length=1)]
    datatype: str
    data: msgspec.Raw
    parameters: dict[str, Any] | None = None


class V2Output(msgspec.Struct, forbid_unknown_fields=False):
    """An output a V2 client asks for by name."""

    name: str
    parameters: dict[str, Any] | None = None


class V2Request(msgspec.Struct, forbid_unknown_fields=False):
    """`POST /v2/models/<name>/infer` body (documented by :class:`mlplat.serving.protocol.InferenceRequest`)."""

    inputs: Annotated[list[V2Input], msgspec.Meta(min_length=1)]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[V2Output] | None = None


_V2_DECODER = msgspec.json.Decoder(V2Request)
_DATA_DECODERS: dict[tuple[str, int], msgspec.json.Decoder[Any]] = {}


def decode_v2_request(body: bytes) -> V2Request:
    """The V2 envelope (tensor data left raw), or :class:`InputError` saying where it is wrong."""
    try:
        return _V2_DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise InputError(f"invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InputError(f"invalid request: the body is not valid JSON ({exc})") from None


def _data_decoder(kind: str, depth: int) -> msgspec.json.Decoder[Any]:
    """A strict decoder of `data` for a dtype kind: flat (depth 1) or nested up to `depth` levels.

    Strict: no booleans among numbers, no fractions among integers, no strings, no null.
    """
    key = (kind, depth)
    decoder = _DATA_DECODERS.get(key)
    if decoder is None:
        element: Any = {"b": bool, "i": int, "u": int, "f": float}[kind]
        item: Any = element
        for _ in range(depth - 1):
            item = element | list[item]
        decoder = _DATA_DECODERS[key] = msgspec.json.Decoder(list[item])
    return decoder


def v2_input_to_array(given: V2Input, spec: TensorSpec | None, max_rows: int) -> np.ndarray:
    """One V2 input (`data` flat or nested to match `shape`, row-major) -> an array, checked against `spec`.

    The declared shape and the raw size are checked before `data` is parsed, so an oversized tensor costs no
    parsing; `data` is then parsed strictly for its datatype.
    """
    where = f"input {given.name!r}"
    _check_declared(given, spec, max_rows, where)
    shape, dtype = given.shape, V2_DATATYPES[given.datatype]
    count = math.prod(shape)
    if len(given.data) > BODY_OVERHEAD_BYTES + count * MAX_BYTES_PER_VALUE:
        raise InputError(f"{where}: data is far larger than shape {list(shape)} needs ({len(given.data)} bytes)")
    array = _v2_values(given, dtype, where)
    if array.size != count:
        raise InputError(f"{where}: shape {list(shape)} needs {count} values, data has {array.size}")
    if array.ndim > 1 and tuple(array.shape) != tuple(shape):
        raise InputError(f"{where}: nested data has shape {list(array.shape)}, declared shape is {list(shape)}")
    array = array.reshape(shape)
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError(f"{where}: values overflow {given.datatype} (finite numbers only)")
    return array


def _check_declared(given: V2Input, spec: TensorSpec | None, max_rows: int, where: str) -> None:
    """What the input declares (name, datatype, shape) against the model's spec and the row limit."""
    name, datatype, shape = given.name, given.datatype, given.shape
    if spec is not None:
        if spec.name and name != spec.name:
            raise InputError(f"{where}: unknown input name; the model's input is {spec.name!r}")
        if datatype != spec.datatype:
            raise InputError(f"{where}: datatype {datatype} does not match the model's {spec.datatype}")
    if datatype not in V2_DATATYPES:
        raise InputError(f"{where}: unsupported datatype {datatype!r}; supported: {', '.join(V2_DATATYPES)}")
    if any(d < 0 for d in shape):
        raise InputError(f"{where}: shape must list non-negative sizes with a batch dimension first, got {list(shape)}")
    if not 1 <= shape[0] <= max_rows:
        raise InputError(f"the batch dimension must be 1 to {max_rows} rows, got {shape[0]}")
    if spec is not None:
        spec.check_row_shape(shape[1:])


def _v2_values(given: V2Input, dtype: np.dtype[Any], where: str) -> np.ndarray:
    """`data` parsed for its datatype (flat, else nested as deep as the shape), as an array: flat floats by
    :func:`~mlplat.serving.flat_rows.flat_floats` where it can, the rest by :func:`v2_values_strict`."""
    array = flat_floats(memoryview(given.data), dtype)  # no copy of data that is not floats
    return array if array is not None else v2_values_strict(given, dtype, where)


def v2_values_strict(given: V2Input, dtype: np.dtype[Any], where: str) -> np.ndarray:
    """`data` parsed strictly for its datatype (flat, else nested as deep as the shape), as an array."""
    try:
        values = _data_decoder(dtype.kind, 1).decode(given.data)
    except msgspec.ValidationError:
        try:
            values = _data_decoder(dtype.kind, len(given.shape)).decode(given.data)
        except msgspec.ValidationError as exc:
            what = {"b": "true or false", "i": "integers", "u": "integers", "f": "numbers"}[dtype.kind]
            raise InputError(f"{where}: data must hold {what} for {given.datatype} ({exc})") from None
    except msgspec.DecodeError as exc:
        raise InputError(f"{where}: data is not valid JSON ({exc})") from None
    try:
        with np.errstate(over="ignore"):  # float overflow becomes inf, refused by the caller
            return np.asarray(values, dtype=dtype)
    except OverflowError:
        raise InputError(f"{where}: values are out of range for {given.datatype}") from None
    except ValueError as exc:
        raise InputError(f"{where}: data is ragged: {exc}") from None


def describe_validation_error(exc: ValidationError, limit: int = 5) -> str:
    """A one-line explanation of a request validation failure: where, and what was wrong."""
    problems = []
    for error in exc.errors()[:limit]:
        loc = "".join(
            f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(error["loc"])
        )
        given = error.get("input")
        quiet = error["type"] in {"missing", "json_invalid"} or isinstance(given, list | dict)
        problems.append(f"{loc or 'body'}: {error['msg']}" + ("" if quiet else f" (got {given!r:.40})"))
    more = exc.error_count() - len(problems)
    if more > 0:
        problems.append(f"... and {more} more")
    return "invalid request: " + "; ".join(problems)
