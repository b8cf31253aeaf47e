# Red team: return an object (not an array) whose __eq__ always says yes.
import numpy as np


class Anything:
    shape = None
    dtype = np.float64

    def __eq__(self, other):
        return True

    def __array__(self, dtype=None, copy=None):
        return np.zeros(3)


class ReLU(ReLU):  # noqa: F821
    @staticmethod
    def forward(x):
        return Anything(), (x,)
