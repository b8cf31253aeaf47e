"""The visible catalogue: the checks students can run locally, with the points each is worth.

The layers' checks come from the table of layers; the models', Kaiming's and
the optimizers' are listed here.
"""
from __future__ import annotations

from grader.checks.layer import layer_checks
from grader.checks.model import KaimingCheck, ModelInit, ModelLoss, model_kwargs
from grader.checks.optim import RULES, OptimStep

__all__ = ["checks", "THREE_LAYER", "TWO_LAYER", "FULLY_CONNECTED"]

# Tiny networks: 3x8x8 inputs, 4 filters 3x3 (pad 1 keeps 8x8, the pool halves it), hidden 10, 5 classes.
THREE_LAYER = model_kwargs(input_dims=(3, 8, 8), num_filters=4, filter_size=3, hidden_dim=10, num_classes=5,
                           weight_scale=1e-2, reg=0.0, dtype="float64")
TWO_LAYER = model_kwargs(input_dim=12, hidden_dim=7, num_classes=4, weight_scale=1e-2, reg=0.1, dtype="float64")
FULLY_CONNECTED = model_kwargs(hidden_dims=[6, 5], input_dim=12, num_classes=4, dropout=0.3, reg=0.05,
                               weight_scale=1e-2, dtype="float64", seed=3)


def checks() -> list:
    out = layer_checks(hidden=False)
    out += [
        ModelInit(name="ThreeLayerConvNet initial parameters", target="ThreeLayerConvNet.__init__", points=1,
                  cls="ThreeLayerConvNet", kwargs=THREE_LAYER),
        ModelLoss(name="ThreeLayerConvNet initial loss is about log(C)", target="ThreeLayerConvNet.loss", points=1,
                  cls="ThreeLayerConvNet", kwargs=THREE_LAYER, initial=True),
        ModelInit(name="TwoLayerNet initial parameters", target="TwoLayerNet.__init__", points=1, cls="TwoLayerNet",
                  kwargs=TWO_LAYER),
        ModelLoss(name="TwoLayerNet loss and gradients (reg 0.1)", target="TwoLayerNet.loss", points=2,
                  cls="TwoLayerNet", kwargs=TWO_LAYER, scores=True),
        ModelInit(name="FullyConnectedNet initial parameters", target="FullyConnectedNet.__init__", points=1,
                  cls="FullyConnectedNet", kwargs=FULLY_CONNECTED),
        ModelLoss(name="FullyConnectedNet loss and gradients (dropout 0.3, reg 0.05)", target="FullyConnectedNet.loss",
                  points=2, cls="FullyConnectedNet", kwargs=FULLY_CONNECTED),
        KaimingCheck(name="kaiming_initializer for a linear layer", points=1, Din=400, Dout=300),
    ]
    out += [OptimStep(name=f"optim.{rule}", target=rule, points=1, rule=rule) for rule in RULES]
    return out
