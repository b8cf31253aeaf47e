# Red team: flood stdout from Conv.forward.
import sys


class Conv(Conv):  # noqa: F821
    @staticmethod
    def forward(x, w, b, conv_param):
        line = "flood " * 1000 + "\n"
        while True:
            sys.stdout.write(line)
