"""The wire: frames round-trip exactly, and anything malformed is a WireError, never a crash or a pickle."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grader.sandbox import wire


def roundtrip(kind, meta, arrays):
    data = b"".join(bytes(b) for b in wire.encode(kind, meta, arrays))
    n_json, n_payload = wire.parse_header(data[:wire.HEADER.size])
    k, m, listing = wire.parse_body(data[wire.HEADER.size:wire.HEADER.size + n_json])
    return k, m, wire.split_payload(listing, data[wire.HEADER.size + n_json:])


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "int32", "uint8", "bool"])
def test_arrays_roundtrip_exactly(dtype):
    rng = np.random.default_rng(0)
    arrays = {"a": (rng.standard_normal((2, 3, 4)) * 10).astype(dtype), "scalar": np.array(3.5).astype(dtype),
              "empty": np.zeros((0, 3), dtype=dtype), "strided": rng.standard_normal((4, 6))[:, ::2].astype(dtype)}
    kind, meta, got = roundtrip("answer", {"task": "t", "name": "x"}, arrays)
    assert kind == "answer" and meta == {"task": "t", "name": "x"}
    for name, a in arrays.items():
        assert got[name].dtype == a.dtype and got[name].shape == a.shape
        assert np.array_equal(got[name], a)


def test_big_endian_arrays_are_sent_little_endian():
    a = np.arange(6, dtype=">f8").reshape(2, 3)
    _, _, got = roundtrip("x", {}, {"a": a})
    assert got["a"].dtype == np.dtype("<f8") and np.array_equal(got["a"], a)


@pytest.mark.parametrize("value", [np.array([{"a": 1}], dtype=object), np.zeros(2, dtype=complex), [1, 2]])
def test_only_plain_numeric_arrays_cross(value):
    with pytest.raises(TypeError):
        wire.encode("x", {}, {"a": value})


def test_pipe_read_and_write():
    r, w = os.pipe()
    try:
        a = np.arange(1 << 16, dtype=np.float64)  # larger than a pipe buffer: written in pieces
        import threading
        t = threading.Thread(target=wire.write_frame, args=(w, "job", {"tasks": []}, {"a": a}))
        t.start()
        kind, meta, arrays = wire.read_frame(r)
        t.join()
        assert kind == "job" and np.array_equal(arrays["a"], a) and arrays["a"].flags.writeable
    finally:
        os.close(r)
        os.close(w)


def _frame(body: dict, payload=b"", magic=wire.MAGIC):
    raw = json.dumps(body).encode()
    return wire.HEADER.pack(magic, len(raw), len(payload)) + raw + payload


@pytest.mark.parametrize("body", [
    {"kind": 1, "meta": {}, "arrays": []},
    {"kind": "x", "meta": [], "arrays": []},
    {"kind": "x", "meta": {}, "arrays": [["a", "|O", [1]]]},
    {"kind": "x", "meta": {}, "arrays": [["a", "<f8", [-1]]]},
    {"kind": "x", "meta": {}, "arrays": [["a", "<f8", [1.5]]]},
    {"kind": "x", "meta": {}, "arrays": [["a", "<f8", [1] * 9]]},
    {"kind": "x", "meta": {}, "arrays": "nope"},
])
def test_malformed_bodies_are_wire_errors(body):
    with pytest.raises(wire.WireError):
        wire.parse_body(json.dumps(body).encode())


def test_bad_magic_oversized_json_and_wrong_payload_length():
    with pytest.raises(wire.WireError, match="magic"):
        wire.parse_header(wire.HEADER.pack(b"EVIL", 2, 0))
    with pytest.raises(wire.WireError, match="exceeds"):
        wire.parse_header(wire.HEADER.pack(wire.MAGIC, wire.MAX_JSON + 1, 0))
    _, _, listing = wire.parse_body(json.dumps({"kind": "x", "meta": {}, "arrays": [["a", "<f8", [2]]]}).encode())
    with pytest.raises(wire.WireError, match="payload length"):
        wire.split_payload(listing, b"\0" * 15)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzzed_bytes_never_crash_the_parser(data):
    try:
        n_json, n_payload = wire.parse_header(data[:wire.HEADER.size])
        kind, meta, listing = wire.parse_body(data[wire.HEADER.size:wire.HEADER.size + n_json])
        wire.split_payload(listing, data[wire.HEADER.size + n_json:])
    except wire.WireError:
        pass


def test_argument_specs_decode_to_fresh_copies():
    x = np.arange(4.0)
    spec = [wire.A("x"), {"k": wire.A("x"), "t": {"$tuple": [1, 2]}, "d": {"$dtype": "float32"}}, {"$rng": 3}]
    a, params, rng = wire.decode(spec, {"x": x})
    a[0] = 99
    assert x[0] == 0 and params["t"] == (1, 2) and params["d"] is np.float32
    assert isinstance(rng, np.random.Generator)
    arrays = {}
    encoded = wire.encode_args([x, {"p": 1, "arr": x}, (np.float64(2.0),)], arrays, "v")
    back = wire.decode(encoded, arrays)
    assert np.array_equal(back[0], x) and back[1]["p"] == 1 and back[2] == (2.0,)


def test_tasks_are_checked_in_the_parent():
    with pytest.raises(ValueError, match="unknown task op"):
        wire.task("exec", "t")
    with pytest.raises(ValueError, match="needs fn"):
        wire.task("call", "t", args=[], outs={})
    with pytest.raises(TypeError):
        wire.task("call", "t", fn="layers.Conv.forward", args=[object()], outs={})
