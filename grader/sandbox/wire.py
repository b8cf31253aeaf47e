"""The wire between the grader and a child: frames of JSON and raw arrays over pipes.

This module is copied into every child, so it imports nothing but the
standard library and numpy, and both sides use the same code to encode and
decode. A frame is a 16-byte header (the magic ``CNVW``, the JSON length as
u32, the payload length as u64), a UTF-8 JSON object, and a payload of raw
array bytes. The JSON names the frame's ``kind`` and lists its arrays as
``[name, dtype, shape]`` in payload order; nothing is ever unpickled.

Argument specs
--------------
Tasks describe a call's arguments as JSON: ``{"$a": name}`` is a fresh copy
of the input array ``name``, ``{"$dtype": "float32"}`` the numpy scalar type,
``{"$tuple": [...]}`` a tuple, ``{"$rng": seed}`` a fresh
``numpy.random.Generator``, dicts and lists hold specs, anything else is a
literal. :func:`decode` turns a spec into the values; the parent uses it to
call the reference and the child to call the student's code.
"""
from __future__ import annotations

import json
import os
import struct

import numpy as np

MAGIC = b"CNVW"
HEADER = struct.Struct("<4sIQ")
MAX_JSON = 1 << 20
MAX_NDIM = 8
# What may cross the wire: little-endian floats and integers, booleans.
DTYPES = ("<f8", "<f4", "<i8", "<i4", "<u8", "<u4", "|u1", "|i1", "|b1")


class WireError(ValueError):
    """A frame that breaks the protocol (bad magic, oversized, malformed JSON or array list)."""


# ---------------------------------------------------------------- frames


def _wire_dtype(a: np.ndarray) -> str:
    dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    code = dt.str
    if code not in DTYPES:
        raise TypeError(f"an array of dtype {a.dtype} cannot cross the wire (allowed: {', '.join(DTYPES)})")
    return code


def encode(kind: str, meta: dict | None = None, arrays: dict | None = None) -> list:
    """A frame as a list of buffers (header, JSON, array bytes in order), ready for ``os.writev``."""
    listing, buffers = [], []
    for name, a in (arrays or {}).items():
        if type(a) is not np.ndarray:
            raise TypeError(f"{name}: only numpy.ndarray crosses the wire, got {type(a).__name__}")
        code = _wire_dtype(a)
        a = np.asarray(a, dtype=np.dtype(code))
        if not a.flags.c_contiguous:
            a = a.copy(order="C")
        listing.append([str(name), code, list(a.shape)])
        buffers.append(memoryview(a).cast("B") if a.size else b"")
    body = json.dumps({"kind": kind, "meta": meta or {}, "arrays": listing}, allow_nan=False).encode()
    if len(body) > MAX_JSON:
        raise WireError(f"frame header of {len(body)} bytes exceeds {MAX_JSON}")
    payload = sum(len(b) for b in buffers)
    return [HEADER.pack(MAGIC, len(body), payload), body, *buffers]


def parse_header(data: bytes) -> tuple[int, int]:
    """``(json_length, payload_length)`` of a frame header, or WireError."""
    if len(data) != HEADER.size:
        raise WireError("truncated frame header")
    magic, n_json, n_payload = HEADER.unpack(data)
    if magic != MAGIC:
        raise WireError("bad frame magic")
    if n_json > MAX_JSON:
        raise WireError(f"frame JSON of {n_json} bytes exceeds {MAX_JSON}")
    return n_json, n_payload


def parse_body(data: bytes) -> tuple[str, dict, list]:
    """``(kind, meta, [(name, dtype, shape, nbytes)])`` of a frame's JSON, strictly checked."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError(f"frame JSON does not parse: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str) or not isinstance(doc.get("meta"), dict):
        raise WireError("frame JSON is not {kind, meta, arrays}")
    listing = doc.get("arrays")
    if not isinstance(listing, list):
        raise WireError("frame arrays is not a list")
    out = []
    for item in listing:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str) and item[1] in DTYPES
                and isinstance(item[2], list) and len(item[2]) <= MAX_NDIM
                and all(type(d) is int and 0 <= d < 1 << 40 for d in item[2])):
            raise WireError(f"malformed array entry {str(item)[:200]}")
        nbytes = np.dtype(item[1]).itemsize * int(np.prod(item[2], dtype=np.int64))
        out.append((item[0][:200], item[1], tuple(item[2]), int(nbytes)))
    return doc["kind"], doc["meta"], out


def split_payload(listing: list, payload: bytes) -> dict:
    """The arrays of a frame (read-only views of ``payload``), after checking the sizes add up."""
    if sum(n for *_, n in listing) != len(payload):
        raise WireError("frame payload length does not match its arrays")
    arrays, offset = {}, 0
    for name, dtype, shape, nbytes in listing:
        arrays[name] = np.frombuffer(payload, dtype=np.dtype(dtype), count=nbytes // np.dtype(dtype).itemsize,
                                     offset=offset).reshape(shape)
        offset += nbytes
    return arrays


# ---------------------------------------------------------------- blocking I/O (the child's side)


def write_frame(fd: int, kind: str, meta: dict | None = None, arrays: dict | None = None) -> None:
    """Write one frame to ``fd`` completely (blocking)."""
    buffers = [memoryview(b).cast("B") for b in encode(kind, meta, arrays)]
    while buffers:
        n = os.writev(fd, buffers)
        while buffers and n >= len(buffers[0]):
            n -= len(buffers[0])
            buffers.pop(0)
        if buffers and n:
            buffers[0] = buffers[0][n:]


def _read_exact(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the wire")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, max_payload: int = 1 << 30) -> tuple[str, dict, dict]:
    """Read one frame from ``fd`` (blocking): ``(kind, meta, arrays)``; arrays are writable copies."""
    n_json, n_payload = parse_header(_read_exact(fd, HEADER.size))
    if n_payload > max_payload:
        raise WireError(f"frame payload of {n_payload} bytes exceeds {max_payload}")
    kind, meta, listing = parse_body(_read_exact(fd, n_json))
    arrays = split_payload(listing, _read_exact(fd, n_payload))
    return kind, meta, {k: v.copy() for k, v in arrays.items()}


# ---------------------------------------------------------------- argument specs


def A(name: str) -> dict:
    """The spec of input array ``name``."""
    return {"$a": name}


def decode(spec, inputs: dict):
    """Turn an argument spec into values: arrays are fresh writable copies of ``inputs``."""
    if isinstance(spec, dict):
        if "$a" in spec:
            return np.array(inputs[spec["$a"]], copy=True)
        if "$dtype" in spec:
            return np.dtype(spec["$dtype"]).type
        if "$tuple" in spec:
            return tuple(decode(s, inputs) for s in spec["$tuple"])
        if "$rng" in spec:
            return np.random.default_rng(int(spec["$rng"]))
        return {k: decode(v, inputs) for k, v in spec.items()}
    if isinstance(spec, list):
        return [decode(s, inputs) for s in spec]
    return spec


def encode_args(values, arrays: dict, prefix: str):
    """The inverse of :func:`decode` for plain values: arrays go into ``arrays`` under fresh names."""
    if isinstance(values, np.ndarray):
        name = f"{prefix}{len(arrays)}"
        arrays[name] = values
        return A(name)
    if isinstance(values, dict):
        return {str(k): encode_args(v, arrays, prefix) for k, v in values.items()}
    if isinstance(values, tuple):
        return {"$tuple": [encode_args(v, arrays, prefix) for v in values]}
    if isinstance(values, list):
        return [encode_args(v, arrays, prefix) for v in values]
    if isinstance(values, type) and issubclass(values, np.generic):
        return {"$dtype": np.dtype(values).name}
    if isinstance(values, np.generic):
        return values.item()
    if values is None or isinstance(values, (bool, int, float, str)):
        return values
    raise TypeError(f"cannot send a {type(values).__name__} over the wire")


def prefixed(spec, prefix: str):
    """A spec with every array name prefixed (so several checks can share one child)."""
    if isinstance(spec, dict):
        if "$a" in spec:
            return {"$a": prefix + spec["$a"]}
        return {k: prefixed(v, prefix) for k, v in spec.items()}
    if isinstance(spec, list):
        return [prefixed(s, prefix) for s in spec]
    return spec


# ---------------------------------------------------------------- tasks

# Each task names what the child runs; every output it sends is an answer (task id, name).
OPS = ("import", "call", "fwdbwd", "model_init", "model_loss", "overfit", "solver")


def task(op: str, tid: str, **fields) -> dict:
    """A task for the child, checked here so a malformed task fails in the parent, not the child."""
    if op not in OPS:
        raise ValueError(f"unknown task op {op!r}; known: {', '.join(OPS)}")
    if not isinstance(tid, str) or not tid:
        raise ValueError(f"task id must be a non-empty string, got {tid!r}")
    required = {"import": ("module",), "call": ("fn", "args", "outs"), "fwdbwd": ("fn", "args", "dout", "ngrads"),
                "model_init": ("cls", "kwargs", "keys"), "model_loss": ("cls", "kwargs", "keys", "X"),
                "overfit": ("cls", "kwargs", "keys", "X", "y", "steps", "lr"),
                "solver": ("cls", "kwargs", "keys", "data", "solver_kwargs")}[op]
    missing = [k for k in required if k not in fields]
    if missing:
        raise ValueError(f"task {op!r} needs {', '.join(missing)}")
    json.dumps(fields)  # every field must be plain JSON
    return {"op": op, "id": tid, **fields}
