"""The grader's side of the served reference layers: one :class:`Oracle` per child.

A request names a layer of the table and a method, and carries arrays and
JSON parameters; the oracle checks its size before computing, lets the
reference's own validation reject bad arguments (the child gets the same
ValueError a student would), keeps forward caches under integer handles, and
answers with arrays only. Convolution and pooling run on the fast path, as
the reference's sandwich layers and models do, so a request costs the parent
milliseconds, never a Python loop over a large input.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from grader.sandbox import wire

__all__ = ["Oracle"]


class Oracle:
    """Serves ``convnet.layers`` to one child; bounded in input size, output size and cached memory."""

    MAX_REQUEST_BYTES = 32 << 20
    MAX_ELEMENTS = 1 << 24  # of a padded input or an output
    MAX_HANDLES = 4096
    MAX_CACHED_BYTES = 256 << 20

    def __init__(self):
        self._caches = OrderedDict()  # handle -> (layer, method owner, cache, bytes)
        self._bytes = 0
        self._next = 1
        self.calls = 0

    @staticmethod
    def request_cap() -> int:
        return Oracle.MAX_REQUEST_BYTES

    def serve(self, meta: dict, arrays: dict) -> tuple[str, dict, dict]:
        """One request -> ``(kind, meta, arrays)`` of the reply frame."""
        self.calls += 1
        try:
            return self._serve(meta, arrays)
        except (ValueError, TypeError, KeyError) as exc:
            return "oracle-error", {"type": type(exc).__name__, "message": str(exc)[:1000]}, {}
        except MemoryError:
            return "oracle-error", {"type": "ValueError", "message": "the request needs too much memory"}, {}
        except Exception as exc:  # noqa: BLE001 - the grader's own failure is the child's error, never a crash
            return "oracle-error", {"type": "RuntimeError", "message": f"the grader could not serve the call "
                                                                      f"({type(exc).__name__}: {exc})"[:1000]}, {}

    # -- internals

    def _layer(self, name):
        from convnet.specs import LAYERS

        if not isinstance(name, str) or name not in LAYERS:
            raise ValueError(f"no layer {name!r} is served; known: {', '.join(LAYERS)}")
        spec = LAYERS[name]
        return spec, (spec.fast_class or spec.naive_class)

    def _serve(self, meta, arrays):
        spec, impl = self._layer(meta.get("layer"))
        method = meta.get("method")
        if method == "forward":
            args = wire.decode(meta.get("args"), arrays)
            if not isinstance(args, list):
                raise TypeError(f"{spec.name}.forward: arguments must be a list")
            self._check_size(spec, args)
            out, cache = impl.forward(*args)
            handle = self._keep(spec.name, impl, cache, sum(a.nbytes for a in arrays.values()) + out.nbytes)
            result, updates = {"out": out}, []
            for param, key in spec.mutates:
                position = len(spec.arrays) + spec.params.index(param)
                if position < len(args) and isinstance(args[position], dict) and key in args[position]:
                    name = f"u{len(updates)}"
                    result[name] = np.asarray(args[position][key])
                    updates.append([position, key, name])
            return "oracle-result", {"cache": handle, "updates": updates}, result
        if method in spec.backwards:
            entry = self._caches.get(meta.get("cache"))
            if entry is None or entry[0] != spec.name:
                raise ValueError(f"{spec.name}.{method}: the cache is unknown or expired "
                                 f"(pass the cache that {spec.name}.forward returned)")
            dout = arrays.get("dout")
            if dout is None:
                raise TypeError(f"{spec.name}.{method}: dout is missing")
            # A fast layer has one backward; every backward method of a layer returns the same gradients.
            grads = getattr(entry[1], method, entry[1].backward)(np.array(dout), entry[2])
            grads = grads if isinstance(grads, tuple) else (grads,)
            return "oracle-result", {"n": len(grads)}, {f"g{k}": g for k, g in enumerate(grads)}
        raise ValueError(f"{spec.name} has no method {method!r} to serve")

    def _check_size(self, spec, args):
        """Refuse a call whose padded input or output would exceed the bound, before computing it."""
        from convnet import _checks

        if spec.name == "Conv" and len(args) == 4:
            g = _checks.conv_args(*args)
            sizes = (g.N * g.C * (g.H + 2 * g.pad) * (g.W + 2 * g.pad), g.N * g.F * g.H_out * g.W_out)
        elif spec.name in ("MaxPool", "AvgPool") and len(args) == 2:
            g = _checks.pool_args(args[0], args[1])
            sizes = (g.N * g.C * (g.H + 2 * g.pad) * (g.W + 2 * g.pad), g.N * g.C * g.H_out * g.W_out)
        else:
            sizes = tuple(a.size for a in args if isinstance(a, np.ndarray))
        if max(sizes, default=0) > self.MAX_ELEMENTS:
            raise ValueError(f"{spec.name}.forward: the call needs {max(sizes)} elements, more than the "
                             f"{self.MAX_ELEMENTS} a model check serves")

    def _keep(self, name, impl, cache, nbytes):
        handle = self._next
        self._next += 1
        self._caches[handle] = (name, impl, cache, nbytes)
        self._bytes += nbytes
        while len(self._caches) > self.MAX_HANDLES or self._bytes > self.MAX_CACHED_BYTES:
            _, old = self._caches.popitem(last=False)
            self._bytes -= old[3]
        return handle
