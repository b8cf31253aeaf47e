"""The child's side of the reference layers served by the grader (copied into a child, never imported there by grader).

When a check grades a student's models, the child's ``convnet/layers.py`` is
a proxy: every ``forward``/``backward`` call goes to the grader, which runs
the reference layer on the arrays it receives and sends back the result. The
reference code never enters the child, so a model check charges a model bug
to the model and a layer bug to nothing here.
"""
import numpy as np

try:
    from grader.sandbox import wire
except ImportError:  # in a child: the copy beside this file
    import wire

_FDS = {"in": None, "out": None}
_ERRORS = {"ValueError": ValueError, "TypeError": TypeError, "KeyError": KeyError}


def configure(in_fd: int, out_fd: int) -> None:
    _FDS["in"], _FDS["out"] = in_fd, out_fd


class OracleCache:
    """What a served forward returns as its cache: a handle the grader keeps the real cache under."""

    __slots__ = ("layer", "handle")

    def __init__(self, layer, handle):
        self.layer, self.handle = layer, handle

    def __repr__(self):
        return f"<{self.layer} cache #{self.handle} kept by the grader>"


def _request(meta, arrays):
    if _FDS["out"] is None:
        raise RuntimeError("the reference layers are served only inside the grader's model checks")
    wire.write_frame(_FDS["out"], "oracle", meta, arrays)
    kind, reply, result = wire.read_frame(_FDS["in"])
    if kind == "oracle-error":
        raise _ERRORS.get(reply.get("type"), RuntimeError)(reply.get("message", "the grader refused the call"))
    if kind != "oracle-result":
        raise RuntimeError(f"unexpected reply {kind!r} from the grader")
    return reply, result


def _forward(layer):
    def forward(*args):
        arrays = {}
        spec = wire.encode_args(list(args), arrays, "a")
        reply, result = _request({"layer": layer, "method": "forward", "args": spec}, arrays)
        for position, key, name in reply.get("updates", []):
            args[position][key] = result[name]
        return result["out"], OracleCache(layer, reply["cache"])
    forward.__qualname__ = f"{layer}.forward"
    return staticmethod(forward)


def _backward(layer, method):
    def backward(dout, cache):
        if not isinstance(cache, OracleCache) or cache.layer != layer:
            raise TypeError(f"{layer}.{method} expects the cache returned by {layer}.forward, got {cache!r}")
        if type(dout) is not np.ndarray:
            raise TypeError(f"dout must be a numpy ndarray, got {type(dout).__name__}")
        reply, result = _request({"layer": layer, "method": method, "cache": cache.handle}, {"dout": dout})
        grads = tuple(result[f"g{k}"] for k in range(reply["n"]))
        return grads[0] if reply["n"] == 1 else grads
    backward.__qualname__ = f"{layer}.{method}"
    return staticmethod(backward)


def layer_class(name: str, backwards=("backward",)) -> type:
    """A class like ``convnet.layers.<name>`` whose methods run in the grader."""
    namespace = {"__doc__": f"{name}, served by the grader's reference.", "forward": _forward(name)}
    for method in backwards:
        namespace[method] = _backward(name, method)
    return type(name, (), namespace)
