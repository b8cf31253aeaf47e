# Red team: leave the interpreter from inside Conv.forward.
import os


class Conv(Conv):  # noqa: F821 - appended to the reference layers.py
    @staticmethod
    def forward(x, w, b, conv_param):
        os._exit(0)
