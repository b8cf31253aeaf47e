"""The layer suite: the conv and pool layers of a few standard small networks, one table.

Each layer is ``(name, kind, C, H, W, params)`` for one image; the benchmark
adds the batch size. ``kind`` is ``'conv'`` (params: F, kernel, stride, pad),
``'max'`` or ``'avg'`` (params: window, stride, pad). Layers that occur more
than once in a network (ResNet's repeated blocks) are listed once. The older
cases C1-C4 and P1-P3 come from the ``bench`` geometries of
:data:`convnet.specs.LAYERS`.
"""
from __future__ import annotations

from typing import NamedTuple

from convnet.specs import LAYERS


class Layer(NamedTuple):
    name: str
    kind: str  # 'conv', 'max', 'avg'
    C: int
    H: int
    W: int
    F: int = 0  # conv: filters
    k: int = 3  # kernel or window (square)
    stride: int = 1
    pad: int = 0

    def shapes(self, N):
        """x shape and, for conv, w shape."""
        x = (N, self.C, self.H, self.W)
        return x, ((self.F, self.C, self.k, self.k) if self.kind == "conv" else None)

    def label(self, N):
        if self.kind == "conv":
            return f"{self.k}x{self.k}/{self.stride} x({N},{self.C},{self.H},{self.W}) w({self.F},{self.C})"
        return f"{self.kind} {self.k}x{self.k}/{self.stride} p{self.pad} x({N},{self.C},{self.H},{self.W})"


def conv(name, C, H, F, k=3, stride=1, pad=None):
    return Layer(name, "conv", C, H, H, F, k, stride, k // 2 if pad is None else pad)


def pool(name, kind, C, H, k=2, stride=2, pad=0):
    return Layer(name, kind, C, H, H, 0, k, stride, pad)


NETWORKS = {
    # The EECS 498 DeepConvNet of the training-step benchmark: 3 x (conv3x3-BN-ReLU-pool), 32/64/128 filters.
    "deep": [
        conv("deep.conv1", 3, 32, 32), conv("deep.conv2", 32, 16, 64), conv("deep.conv3", 64, 8, 128),
        pool("deep.pool1", "max", 32, 32), pool("deep.pool2", "max", 64, 16), pool("deep.pool3", "max", 128, 8),
    ],
    # CIFAR ResNet-20: 3x3 at 32/16/8 with 16/32/64 channels, the stride-2 layers, 1x1 shortcuts, global pool.
    "resnet20": [
        conv("res.stem", 3, 32, 16), conv("res.s1", 16, 32, 16),
        conv("res.down2", 16, 32, 32, stride=2), conv("res.s2", 32, 16, 32),
        conv("res.down3", 32, 16, 64, stride=2), conv("res.s3", 64, 8, 64),
        conv("res.short2", 16, 32, 32, k=1, stride=2), conv("res.short3", 32, 16, 64, k=1, stride=2),
        pool("res.gap", "avg", 64, 8, k=8, stride=1),
    ],
    # A VGG-style stack at 56/28/14 with 64-256 channels, and an overlapping 3x3/1 average pool.
    "vgg": [
        conv("vgg.c56", 64, 56, 64), conv("vgg.c28", 64, 28, 128), conv("vgg.c14a", 128, 14, 256),
        conv("vgg.c14b", 256, 14, 256),
        pool("vgg.pool56", "max", 64, 56), pool("vgg.pool28", "max", 128, 28),
        pool("vgg.avg3", "avg", 64, 28, k=3, stride=1, pad=1),
    ],
    # LeNet-style: 5x5 without padding, 2x2 max pools.
    "lenet": [
        conv("lenet.c1", 3, 32, 6, k=5, pad=0), conv("lenet.c2", 6, 14, 16, k=5, pad=0),
        pool("lenet.pool1", "max", 6, 28), pool("lenet.pool2", "max", 16, 10),
    ],
}


def legacy_cases():
    """``{name: (Layer, N)}``: C1-C4 and P1-P3 from the layer table's ``bench`` geometries."""
    out = {}
    for layer_name, kind in (("Conv", "conv"), ("MaxPool", "max"), ("AvgPool", "avg")):
        for name, g in LAYERS[layer_name].geometries.get("bench", {}).items():
            d = g.dims
            N, C, H, W = d["x"]
            if kind == "conv":
                F, _, HH, WW = d["w"]
                assert HH == WW
                out[name] = (Layer(name, kind, C, H, W, F, HH, d["stride"], d["pad"]), N)
            else:
                ph, pw = d["window"]
                assert ph == pw
                out[name] = (Layer(name, kind, C, H, W, 0, ph, d["stride"], d.get("pad", 0)), N)
    return out
