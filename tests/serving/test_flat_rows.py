"""The /predict fast path (serving/flat_rows.py) held to the strict decoder: the same array for every body it parses,
nothing for any other (the strict decoder then accepts or explains), and the common bodies actually taken by it."""

from __future__ import annotations

import json
import warnings
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlplat.serving.flat_rows import FlatRowsParser, flat_floats
from mlplat.serving.schema import InputError, PredictDecoder, TensorSpec, V2Input, v2_values_strict

MAX_ROWS = 4
DTYPES = [np.float16, np.float32, np.float64]


def decoder(dtype: Any, width: int) -> PredictDecoder:
    return PredictDecoder(TensorSpec("x", np.dtype(dtype), (-1, width)), MAX_ROWS)


def fast(decoder: PredictDecoder, body: bytes) -> np.ndarray | None:
    parser = FlatRowsParser.for_spec(decoder.spec, MAX_ROWS)
    assert parser is not None
    return parser.parse(body)


def assert_sound(decoder: PredictDecoder, body: bytes) -> np.ndarray | None:
    """The fast path's answer for `body` is None, or exactly the strict decoder's array (dtype, shape, bits)."""
    parsed = fast(decoder, body)
    if parsed is None:
        return None
    strict = decoder.decode_strict(body)  # raises if the strict decoder refuses what the fast path took
    assert parsed.dtype == strict.dtype and parsed.shape == strict.shape
    assert parsed.tobytes() == strict.tobytes(), (body, parsed, strict)
    assert parsed.flags.c_contiguous and parsed.flags.writeable
    return parsed


def in_range(dtype: Any) -> st.SearchStrategy[float]:
    largest = float(np.finfo(dtype).max)
    return st.floats(min_value=-largest, max_value=largest, allow_nan=False, allow_infinity=False)


@st.composite
def valid_bodies(draw: st.DrawFn) -> tuple[Any, int, bytes]:
    """Bodies the strict decoder accepts, written as clients write them: numbers of every JSON form, any spacing."""
    dtype = draw(st.sampled_from(DTYPES))
    width = draw(st.integers(1, 6))
    rows = draw(st.integers(1, MAX_ROWS))
    largest = int(np.finfo(dtype).max) if dtype != np.float64 else 2**63
    number = st.one_of(
        in_range(dtype).map(repr),
        in_range(dtype).map(lambda v: f"{v:.9e}" if abs(v) < float(np.finfo(dtype).max) / 2 else repr(v)),
        st.integers(-min(largest, 2**63), min(largest, 2**63 - 1)).map(str),
        st.sampled_from(["0", "-0", "-0.0", "1E2", "1e-2", "2.5E+3", "1e-400", "4.9e-324"]),
    )
    space = st.sampled_from(["", " ", "\n", "\t", "\r\n  "])
    values = [[draw(number) for _ in range(width)] for _ in range(rows)]

    def join(items: list[str]) -> str:
        return (
            "["
            + "".join(
                f"{draw(space)}{item}{draw(space)}" + ("," if i < len(items) - 1 else "")
                for i, item in enumerate(items)
            )
            + "]"
        )

    text = "{" + draw(space) + '"inputs"' + draw(space) + ":" + join([join(row) for row in values]) + draw(space) + "}"
    return dtype, width, text.encode()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_bodies())
def test_a_valid_body_parses_to_exactly_the_strict_decoders_array(case: tuple[Any, int, bytes]) -> None:
    dtype, width, body = case
    d = decoder(dtype, width)
    strict = d.decode_strict(body)
    parsed = assert_sound(d, body)
    # Every number form and spacing a client may send takes the path; values near the range's bound may go strict
    # (their squares can add up past the bound's square).
    if dtype == np.float64 or np.abs(strict.astype(np.float64)).max() <= float(np.finfo(dtype).max) / 16:
        assert parsed is not None, body
    np.testing.assert_array_equal(d.decode(body), strict)


def test_the_bodies_clients_send_take_the_fast_path() -> None:
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((MAX_ROWS, 256)).astype(np.float32)
    d = decoder(np.float32, 256)
    for body in (
        orjson.dumps({"inputs": rows[:1]}, option=orjson.OPT_SERIALIZE_NUMPY),
        orjson.dumps({"inputs": rows}, option=orjson.OPT_SERIALIZE_NUMPY),
        json.dumps({"inputs": rows.tolist()}).encode(),  # Python's json: spaces, 17 digits
        json.dumps({"inputs": rows.astype(np.float64).tolist()}, indent=2).encode(),
    ):
        parsed = assert_sound(d, body)
        assert parsed is not None
        np.testing.assert_array_equal(parsed, np.asarray(json.loads(body)["inputs"], np.float32))


F32_MAX_ABOVE = "3.4028235e38"  # above float32's largest finite value, though a float32 cast rounds it down to it
REFUSED = [
    ("nested array in a row", b'{"inputs": [[1.0, [2.0], 3.0]]}'),
    ("nested array, same count", b'{"inputs": [[1.0, 2.0, [3.0]]]}'),
    ("rows one level too deep", b'{"inputs": [[[1.0, 2.0, 3.0]]]}'),
    ("a row that is a number", b'{"inputs": [1.0, 2.0, 3.0]}'),
    ("a row that is an object", b'{"inputs": [{"a": 1}]}'),
    ("a boolean", b'{"inputs": [[1.0, true, 3.0]]}'),
    ("null", b'{"inputs": [[1.0, null, 3.0]]}'),
    ("a number in a string", b'{"inputs": [[1.0, "2.0", 3.0]]}'),
    ("NaN", b'{"inputs": [[1.0, NaN, 3.0]]}'),
    ("Infinity", b'{"inputs": [[1.0, Infinity, 3.0]]}'),
    ("a double's overflow", b'{"inputs": [[1.0, 1e400, 3.0]]}'),
    ("float32's overflow, rounded down by a cast", b'{"inputs": [[1.0, ' + F32_MAX_ABOVE.encode() + b", 3.0]]}"),
    ("a negative one", b'{"inputs": [[1.0, -' + F32_MAX_ABOVE.encode() + b", 3.0]]}"),
    ("a short row", b'{"inputs": [[1.0, 2.0]]}'),
    ("a long row", b'{"inputs": [[1.0, 2.0, 3.0, 4.0]]}'),
    ("rows of different widths, same count", b'{"inputs": [[1.0, 2.0], [3.0, 4.0, 5.0, 6.0]]}'),
    ("no rows", b'{"inputs": []}'),
    ("too many rows", b'{"inputs": [' + b", ".join([b"[1, 2, 3]"] * (MAX_ROWS + 1)) + b"]}"),
    ("no inputs", b'{"rows": [[1.0, 2.0, 3.0]]}'),
    ("inputs not a list", b'{"inputs": 1.0}'),
    ("a last duplicate that is wrong", b'{"inputs": [[1.0, 2.0, 3.0]], "inputs": [[true, 2.0, 3.0]]}'),
    ("a byte order mark", b'\xef\xbb\xbf{"inputs": [[1.0, 2.0, 3.0]]}'),
    ("a top-level list", b"[[1.0, 2.0, 3.0]]"),
    ("trailing garbage", b'{"inputs": [[1.0, 2.0, 3.0]]} x'),
    ("a trailing comma", b'{"inputs": [[1.0, 2.0, 3.0,]]}'),
    ("a leading zero", b'{"inputs": [[01, 2.0, 3.0]]}'),
    ("a bare fraction", b'{"inputs": [[1., 2.0, 3.0]]}'),
    ("a NUL after the document", b'{"inputs": [[1.0, 2.0, 3.0]]}\x00'),
    ("empty", b""),
]


@pytest.mark.parametrize(("why", "body"), REFUSED, ids=[why for why, _ in REFUSED])
def test_a_body_the_strict_decoder_refuses_is_left_to_it(why: str, body: bytes) -> None:
    d = decoder(np.float32, 3)
    assert fast(d, body) is None
    with pytest.raises(InputError):
        d.decode(body)
    # A refusal leaves nothing of its document behind: the next body still takes the fast path.
    assert fast(d, b'{"inputs": [[1.0, 2.0, 3.0]]}') is not None


def test_values_beyond_any_range_are_left_to_the_strict_decoder_without_a_warning() -> None:
    d = decoder(np.float32, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow in the range check would warn (np.dot does)
        assert fast(d, b'{"inputs": [[1e300, -1.7976931348623157e308, 1.0]]}') is None
    # Values in range whose squares add up past the bound: valid, so decoded (strictly).
    near = float(np.finfo(np.float32).max)
    body = json.dumps({"inputs": [[near, -near, near]]}).encode()
    assert fast(d, body) is None
    np.testing.assert_array_equal(d.decode(body), np.full((1, 3), near, np.float32) * [1, -1, 1])


ACCEPTED_BY_THE_STRICT_DECODER_ONLY = [
    ("an unknown field", b'{"inputs": [[1.0, 2.0, 3.0]], "parameters": {}}'),
    ("a duplicate key (the last one counts)", b'{"inputs": [[9.0, 9.0, 9.0]], "inputs": [[1.0, 2.0, 3.0]]}'),
    ("leading whitespace", b'  {"inputs": [[1.0, 2.0, 3.0]]}'),
    ("an integer beyond 64 bits", b'{"inputs": [[18446744073709551616, 2.0, 3.0]]}'),
    ("invalid UTF-8 in an unknown field's name (msgspec skips it unread)", b'{"inputs": [[1.0, 2.0, 3.0]], "\xff": 1}'),
]


@pytest.mark.parametrize(
    ("why", "body"), ACCEPTED_BY_THE_STRICT_DECODER_ONLY, ids=[w for w, _ in ACCEPTED_BY_THE_STRICT_DECODER_ONLY]
)
def test_a_valid_body_the_fast_path_cannot_prove_is_decoded_strictly(why: str, body: bytes) -> None:
    d = decoder(np.float32, 3)
    assert fast(d, body) is None
    np.testing.assert_array_equal(d.decode(body), d.decode_strict(body))


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=3),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=2),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    inputs=json_values,
    extra=st.dictionaries(st.sampled_from(["inputs", "x"]), json_values, max_size=1),
)
def test_any_json_body_is_parsed_as_the_strict_decoder_would_or_left_to_it(
    dtype: Any, inputs: Any, extra: dict[str, Any]
) -> None:
    d = decoder(dtype, 2)
    body = json.dumps({"inputs": inputs, **extra}).encode()  # NaN and Infinity as Python writes them
    if assert_sound(d, body) is None:  # then decode is the strict decoder's answer, an array or an InputError
        try:
            expected = d.decode_strict(body)
        except InputError:
            with pytest.raises(InputError):
                d.decode(body)
        else:
            np.testing.assert_array_equal(d.decode(body), expected)


@pytest.mark.parametrize(
    "spec",
    [
        None,
        TensorSpec("x", np.dtype(np.int64), (-1, 3)),
        TensorSpec("x", np.dtype(np.float32), (-1, 2, 2)),
        TensorSpec("x", np.dtype(np.float32), (-1, -1)),
    ],
)
def test_only_fixed_width_rows_of_floats_have_a_fast_path(spec: TensorSpec | None) -> None:
    assert FlatRowsParser.for_spec(spec, MAX_ROWS) is None
    assert FlatRowsParser.for_spec(TensorSpec("x", np.dtype(np.float32), (-1, 3)), MAX_ROWS) is not None


# -- V2: a tensor's flat data ---------------------------------------------------------------------------------------

DATATYPE = {np.float16: "FP16", np.float32: "FP32", np.float64: "FP64"}


def assert_v2_sound(dtype: Any, data: bytes) -> np.ndarray | None:
    """flat_floats's array for `data` is None, or exactly what the V2 decoder's strict parse gives (which may then
    be refused by its caller for overflow: flat_floats never returns what overflows)."""
    parsed = flat_floats(data, np.dtype(dtype))
    if parsed is None:
        return None
    given = V2Input(name="x", shape=[len(parsed)], datatype=DATATYPE[dtype], data=msgspec.Raw(data))
    strict = v2_values_strict(given, np.dtype(dtype), "input 'x'")
    assert parsed.dtype == strict.dtype and parsed.shape == strict.shape
    assert parsed.tobytes() == strict.tobytes(), (data, parsed, strict)
    assert np.isfinite(parsed).all()
    return parsed


@settings(max_examples=300, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    values=st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**70), 2**70), max_size=8),
)
def test_v2_flat_data_parses_to_exactly_the_strict_array(dtype: Any, values: list[Any]) -> None:
    data = json.dumps(values).encode()
    parsed = assert_v2_sound(dtype, data)
    largest = float(np.finfo(dtype).max)
    if all(abs(v) <= largest / 16 for v in values) and all(abs(v) < 2**63 for v in values if isinstance(v, int)):
        assert parsed is not None, data


@settings(max_examples=300, deadline=None)
@given(dtype=st.sampled_from(DTYPES), data=json_values)
def test_v2_data_of_any_json_is_parsed_as_the_strict_decoder_would_or_left_to_it(dtype: Any, data: Any) -> None:
    assert_v2_sound(dtype, json.dumps(data).encode())


@pytest.mark.parametrize(
    "data",
    [
        b"[[1.0, 2.0], [3.0, 4.0]]",
        b"[1.0, [2.0]]",
        b"[1.0, true]",
        b"[1.0, null]",
        b'[1.0, "2"]',
        b"[NaN]",
        b"[1e400]",
        b"[3.4028235e38]",
        b"{}",
        b"1.0",
        b" [1.0]",
        b"[1.0,]",
    ],
)
def test_v2_data_that_is_not_flat_numbers_in_range_is_left_to_the_strict_decoder(data: bytes) -> None:
    assert flat_floats(data, np.dtype(np.float32)) is None
    assert flat_floats(b"[1.0, 2]", np.dtype(np.float32)) is not None  # and the parser is free again
