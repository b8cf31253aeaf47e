"""The served reference layers: what a model check's child gets, and what the oracle refuses."""
from __future__ import annotations

import numpy as np
import pytest

from convnet import layers
from convnet.specs import LAYERS
from grader.sandbox import oracle_client, wire
from grader.sandbox.oracle import Oracle


@pytest.fixture
def served(monkeypatch):
    """The client's requests answered by an Oracle in this process (the wire encoding included)."""
    server = Oracle()

    def request(meta, arrays):
        data = b"".join(bytes(b) for b in wire.encode("oracle", meta, arrays))
        n_json, _ = wire.parse_header(data[:wire.HEADER.size])
        _, meta, listing = wire.parse_body(data[wire.HEADER.size:wire.HEADER.size + n_json])
        arrays = wire.split_payload(listing, data[wire.HEADER.size + n_json:])
        kind, reply, result = server.serve(meta, arrays)
        if kind == "oracle-error":
            raise oracle_client._ERRORS.get(reply["type"], RuntimeError)(reply["message"])
        return reply, {k: np.array(v) for k, v in result.items()}

    monkeypatch.setattr(oracle_client, "_request", request)
    return server


@pytest.mark.parametrize("name", [n for n, s in LAYERS.items() if not s.stochastic])
def test_served_layers_match_the_reference(name, served):
    spec = LAYERS[name]
    proxy = oracle_client.layer_class(name, spec.backwards)
    ref = spec.naive_class
    call = spec.call(np.random.default_rng(0), "check")
    out, cache = proxy.forward(*call.copy().args())
    want, ref_cache = ref.forward(*call.copy().args())
    assert np.allclose(out, want, rtol=1e-12, atol=1e-12)
    dout = np.random.default_rng(1).standard_normal(out.shape)
    for method in spec.backwards:
        got = getattr(proxy, method)(dout, cache)
        exp = getattr(ref, method)(dout, ref_cache)
        got, exp = (got, exp) if isinstance(got, tuple) else ((got,), (exp,))
        for g, e in zip(got, exp):
            assert np.allclose(g, e, rtol=1e-10, atol=1e-12)


def test_batchnorm_running_statistics_are_written_back(served):
    proxy = oracle_client.layer_class("BatchNorm", ("backward",))
    x = np.random.default_rng(0).standard_normal((6, 3))
    bn_param = {"mode": "train", "momentum": 0.5}
    proxy.forward(x, np.ones(3), np.zeros(3), bn_param)
    expected = {"mode": "train", "momentum": 0.5}
    layers.BatchNorm.forward(x, np.ones(3), np.zeros(3), expected)
    assert np.allclose(bn_param["running_mean"], expected["running_mean"])
    assert np.allclose(bn_param["running_var"], expected["running_var"])


def test_the_reference_validation_reaches_the_student(served):
    proxy = oracle_client.layer_class("Conv")
    x, w, b = np.zeros((1, 3, 5, 5)), np.zeros((2, 2, 3, 3)), np.zeros(2)
    with pytest.raises(ValueError, match="x has 3 channels"):
        proxy.forward(x, w, b, {"stride": 1, "pad": 1})
    with pytest.raises(TypeError, match="expects the cache"):
        proxy.backward(np.zeros(3), ("not", "a", "cache"))


def test_the_oracle_refuses_unknown_layers_methods_handles_and_oversized_calls():
    server = Oracle()
    assert server.serve({"layer": "os.system", "method": "forward", "args": []}, {})[0] == "oracle-error"
    assert server.serve({"layer": "Conv", "method": "__init__", "args": []}, {})[0] == "oracle-error"
    assert server.serve({"layer": "Conv", "method": "backward", "cache": 12345}, {"dout": np.zeros(1)})[1][
        "message"].startswith("Conv.backward: the cache is unknown")
    x = np.zeros((1, 1, 4, 4))
    kind, reply, _ = server.serve({"layer": "Conv", "method": "forward",
                                   "args": [wire.A("x"), wire.A("w"), wire.A("b"), {"stride": 1, "pad": 3000}]},
                                  {"x": x, "w": np.zeros((1, 1, 3, 3)), "b": np.zeros(1)})
    assert kind == "oracle-error" and "elements" in reply["message"]


def test_cached_memory_is_bounded():
    server = Oracle()
    server.MAX_HANDLES = 3
    x = np.ones((4, 5))
    for _ in range(5):
        kind, reply, _ = server.serve({"layer": "ReLU", "method": "forward", "args": [wire.A("x")]}, {"x": x})
        assert kind == "oracle-result"
    assert len(server._caches) == 3
    kind, reply, _ = server.serve({"layer": "ReLU", "method": "backward", "cache": 1}, {"dout": x})
    assert kind == "oracle-error" and "expired" in reply["message"]
