"""The common `/predict` body, rows of one fixed width of floats, parsed into an array without a Python float per value.

The strict decoder (:class:`mlplat.serving.schema.PredictDecoder`, msgspec) makes a Python float of every value of
``{"inputs": [[...], ...]}`` and numpy then converts them one by one: for a row of 256 values about 13 us, the largest
single part of the Python a request costs the server at full load (docs/benchmarks.md). simdjson validates the whole
body and copies the rows' numbers into one buffer of doubles in C, in about half that.

This is a fast path only. :meth:`FlatRowsParser.parse` returns an array only for a body it can show the strict
decoder would accept with exactly the same array, and ``None`` for anything else (an error, an unknown field, a
number outside the dtype's range, any doubt), which then goes to the strict decoder: it accepts what is valid the
same way and says precisely what is wrong with the rest. What is shown, and how:

- JSON: simdjson validates the grammar, UTF-8 and every number's syntax and range as msgspec does; the body must
  start with ``{`` (simdjson also skips a UTF-8 byte order mark, which msgspec refuses);
- shape: an object with exactly one key, ``inputs`` (a duplicate key or an unknown field: the strict decoder takes
  the last duplicate and ignores unknown fields), whose value is an array of 1 to `max_rows` rows of `width` items
  each; they flatten to rows x width numbers, and the body holds exactly rows + 1 ``[`` (flattening alone would
  hide a nested array: the only string is the key, so every ``[`` is an array's);
- values: numbers only (a string, boolean or null stops the copy), JSON integers read as their double as msgspec's
  float fields read them; each at most the dtype's largest finite value in magnitude, msgspec's bound, shown by
  their sum of squares staying below that value's square (a float64 row needs no check: simdjson refuses a number
  a double cannot hold).

:func:`flat_floats` does the same for a KServe V2 tensor's flat ``data`` (``[0.5, 1, ...]``: one ``[``, numbers only),
against the V2 decoder's strict parse, which casts to the datatype and refuses what overflows it.

tests/serving/test_flat_rows.py holds both fast paths to their strict decoders over valid bodies and a corpus of near
misses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import simdjson

if TYPE_CHECKING:  # schema's decoder builds this parser
    from mlplat.serving.schema import TensorSpec

# What simdjson raises for a document it refuses (syntax, types, depth, size) or while it holds another one.
_REFUSED = (ValueError, TypeError, LookupError, RuntimeError, MemoryError)
_V2_DATA = simdjson.Parser()  # flat_floats's; used on the event loop


class FlatRowsParser:
    """Parses `/predict` bodies of rows of `width` numbers into a `dtype` array of shape (rows, width), or says it
    cannot (``None``). Build it with :meth:`for_spec`; use it from one thread (the event loop): simdjson's parser
    holds one document at a time (used from two threads at once, it refuses, and the strict decoder answers)."""

    def __init__(self, dtype: np.dtype[Any], width: int, max_rows: int) -> None:
        if dtype.kind != "f" or width < 1 or max_rows < 1:
            raise ValueError(f"flat rows are 1 or more floats per row, got dtype {dtype} and width {width}")
        self.dtype = dtype
        self.width = width
        self.max_rows = max_rows
        self._bound = _squares_bound(dtype)
        self._parser = simdjson.Parser()

    @classmethod
    def for_spec(cls, spec: TensorSpec | None, max_rows: int) -> FlatRowsParser | None:
        """A parser for `spec`'s rows if they are 1-D floats of a fixed width; else ``None`` (strict decoder only)."""
        if spec is None or spec.dtype.kind != "f" or len(spec.row_shape) != 1 or spec.row_shape[0] < 1:
            return None
        return cls(spec.dtype, spec.row_shape[0], max_rows)

    def parse(self, body: bytes | bytearray) -> np.ndarray | None:
        """The rows of `body` as an array, or ``None`` where the strict decoder must decide."""
        if body[:1] != b"{":
            return None
        try:
            values = self._values(bytes(body))
        except _REFUSED:  # simdjson's errors: the strict decoder explains
            return None
        if values is None:
            return None
        rows = len(values) // self.width
        if not _arrays_only_at_rows(body, rows):
            return None
        if not _within(values, self._bound):
            return None
        return values.astype(self.dtype).reshape(rows, self.width)

    def _values(self, body: bytes) -> np.ndarray | None:
        # The document's proxies live only in this frame: simdjson refuses the next parse while one is alive.
        document = self._parser.parse(body)  # an object: the body starts with "{"
        if len(document) != 1:  # type: ignore[arg-type]
            return None
        inputs = document.get("inputs")  # type: ignore[union-attr]
        if not isinstance(inputs, simdjson.Array):
            return None
        rows = len(inputs)
        if not 1 <= rows <= self.max_rows:
            return None
        if rows > 1:  # one row holds all the values; several must hold `width` each (nesting: the "[" count)
            for row in inputs:
                if not isinstance(row, simdjson.Array) or len(row) != self.width:
                    return None
        values = np.frombuffer(inputs.as_buffer(of_type="d"), dtype=np.float64)
        return values if len(values) == rows * self.width else None


def _arrays_only_at_rows(body: bytes | bytearray, rows: int) -> bool:
    """Whether `body` holds exactly rows + 1 ``[``: the list of rows and the rows themselves, nothing nested."""
    at = 0
    for _ in range(rows + 1):  # memchr per find: faster than counting every byte of the body
        at = body.find(b"[", at) + 1
        if at == 0:
            return False
    return body.find(b"[", at) == -1


def flat_floats(data: bytes | memoryview, dtype: np.dtype[Any]) -> np.ndarray | None:
    """A V2 tensor's flat `data` (a JSON array of numbers) as a 1-D `dtype` array, or ``None`` where the strict
    decoder must decide (nested data, anything not a number, a value that may not fit the dtype, invalid JSON).
    A memoryview (of msgspec's Raw) is copied only once the data may be flat floats."""
    if dtype.kind != "f" or data[:1] != b"[":
        return None
    text = bytes(data)  # simdjson parses bytes faster than other buffers
    try:
        values = _doubles(text)
    except _REFUSED:
        return None
    if values is None or text.find(b"[", 1) != -1 or not _within(values, _squares_bound(dtype)):
        return None
    return values.astype(dtype)


def _doubles(data: bytes) -> np.ndarray | None:
    # As FlatRowsParser._values: the document's proxies must be gone before the parser's next document.
    document = _V2_DATA.parse(data)
    if not isinstance(document, simdjson.Array):
        return None
    return np.frombuffer(document.as_buffer(of_type="d"), dtype=np.float64)


def _squares_bound(dtype: np.dtype[Any]) -> float | None:
    """The square of the dtype's largest finite value (its range's bound for msgspec and for a cast); None for
    float64, whose range holds every number simdjson reads (it refuses the others)."""
    if dtype == np.float64:
        return None
    largest = float(np.finfo(dtype).max)
    return largest * largest


def _within(values: np.ndarray, squares_bound: float | None) -> bool:
    """Whether every value is at most the dtype's largest in magnitude, shown by their sum of squares staying below
    the bound: no square reaches it, so neither does the sum (terms >= 0, rounding monotone). A sum that does, or
    overflows to inf, goes to the strict decoder. vdot: one pass, no temporary, and unlike dot it raises no
    overflow warning (2 us less than abs().max() at full load)."""
    return squares_bound is None or float(np.vdot(values, values)) < squares_bound
