"""The hidden catalogue: only the autograder has it (the student release leaves this file out).

Hidden cases of every layer (from the table of layers), the models on more
configurations, Kaiming for convolutions, the optimizers with other
hyper-parameters and a first step, the end-to-end training check, timing
against the reference, and the grading environment's fast path.
"""
from __future__ import annotations

from convnet.specs import Geometry
from grader.checks.environment import environment_checks
from grader.checks.layer import layer_checks
from grader.checks.model import EndToEnd, KaimingCheck, ModelInit, ModelLoss, ModelOverfit, model_kwargs
from grader.checks.optim import RULES, OptimStep
from grader.checks.timing import K, FastSpeedCheck, TimingCheck
from grader.checks.visible import FULLY_CONNECTED, THREE_LAYER, TWO_LAYER

__all__ = ["checks"]

# The training checks' network: wide enough that a few ReLUs dying under a large first step cannot stall
# it (with 4 filters and 10 hidden units the reference left 1-8 of 20 random labels unlearnt now and then).
TRAINING = dict(THREE_LAYER, num_filters=8, hidden_dim=50, weight_scale=0.1)
HYPER = {"sgd": {"learning_rate": 0.05}, "sgd_momentum": {"momentum": 0.5}, "rmsprop": {"decay_rate": 0.9},
         "adam": {"beta1": 0.8, "beta2": 0.99}}

TIMED = [
    ("Conv", "fwd", Geometry(label="x (4, 3, 16, 16), w (8, 3, 3, 3), pad 1",
                             dims=dict(x=(4, 3, 16, 16), w=(8, 3, 3, 3), stride=1, pad=1))),
    ("Conv", "fwdbwd", Geometry(label="x (2, 3, 12, 12), w (6, 3, 3, 3), pad 1",
                                dims=dict(x=(2, 3, 12, 12), w=(6, 3, 3, 3), stride=1, pad=1))),
    ("MaxPool", "fwdbwd", Geometry(label="x (4, 8, 16, 16), 2x2 windows, stride 2",
                                   dims=dict(x=(4, 8, 16, 16), window=(2, 2), stride=2))),
    ("AvgPool", "fwdbwd", Geometry(label="x (4, 8, 16, 16), 2x2 windows, stride 2",
                                   dims=dict(x=(4, 8, 16, 16), window=(2, 2), stride=2))),
]


def _deep(batchnorm):
    return model_kwargs(input_dims=(3, 8, 8), num_filters=[4, 4], max_pools=[0, 1], batchnorm=batchnorm,
                        num_classes=5, weight_scale=1e-2, reg=0.05, dtype="float64")


def checks() -> list:
    out = [c for c in layer_checks(hidden=True) if c.visibility == "hidden"]
    out += [
        ModelLoss(name="ThreeLayerConvNet loss and gradients (reg 0.1)", target="ThreeLayerConvNet.loss", points=3,
                  visibility="hidden", cls="ThreeLayerConvNet", kwargs=dict(THREE_LAYER, reg=0.1), scores=True),
        ModelOverfit(name="ThreeLayerConvNet overfits a small batch", target="ThreeLayerConvNet.loss", points=2,
                     visibility="hidden", cls="ThreeLayerConvNet", kwargs=TRAINING),
        ModelInit(name="DeepConvNet with batch norm: initial parameters", target="DeepConvNet.__init__", points=1,
                  visibility="hidden", cls="DeepConvNet", kwargs=_deep(True)),
        ModelLoss(name="DeepConvNet loss and gradients (reg 0.05)", target="DeepConvNet.loss", points=2,
                  visibility="hidden", cls="DeepConvNet", kwargs=_deep(False), scores=True),
        ModelLoss(name="DeepConvNet with batch norm: loss and gradients", target="DeepConvNet.loss", points=2,
                  visibility="hidden", cls="DeepConvNet", kwargs=_deep(True)),
        ModelLoss(name="TwoLayerNet loss and gradients (no reg)", target="TwoLayerNet.loss", points=1,
                  visibility="hidden", cls="TwoLayerNet", kwargs=dict(TWO_LAYER, reg=0.0)),
        ModelLoss(name="FullyConnectedNet loss and gradients (no dropout, reg 0.2)", target="FullyConnectedNet.loss",
                  points=1, visibility="hidden", cls="FullyConnectedNet",
                  kwargs=dict(FULLY_CONNECTED, dropout=0.0, reg=0.2), scores=True),
        KaimingCheck(name="kaiming_initializer for a convolution (fan_in = Din * K * K)", points=1,
                     visibility="hidden", Din=16, Dout=64, K=3),
        KaimingCheck(name="kaiming_initializer without ReLU (gain 1)", points=1, visibility="hidden", Din=500,
                     Dout=200, relu=False, dtype="float64"),
        EndToEnd(name="Solver trains ThreeLayerConvNet with your own layers, optimizer and Solver", points=2,
                 visibility="hidden", kwargs=TRAINING, tags=("end-to-end",)),
    ]
    out += [OptimStep(name=f"optim.{rule}: other hyper-parameters", target=rule, points=1, visibility="hidden",
                      rule=rule, hyper=HYPER[rule]) for rule in RULES]
    out += [OptimStep(name=f"optim.{rule}: the first step (config=None state)", target=rule, points=1,
                      visibility="hidden", rule=rule, fresh=True) for rule in RULES if RULES[rule]]
    out += [TimingCheck(name=f"{layer}.{'forward' if passes == 'fwd' else 'forward+backward'} time within "
                             f"{K:g}x the reference", target=f"{layer} timing",
                        points=1, layer=layer, passes=passes, geometry=g, tags=("layers", "timing"))
            for layer, passes, g in TIMED]
    out += environment_checks()
    out.append(FastSpeedCheck(name="environment: FastConv at least 100x faster than the naive layer",
                              tags=("environment", "fast", "timing")))
    return out
