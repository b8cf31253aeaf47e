# Red team: plant symlinks and FIFOs where a careless parent would read or write (its output files, its
# inputs, the answers), pointing at a secret; the layers stay correct, so the Conv checks are earned.
import os

for _name in ("stdout.txt", "stderr.txt", "run0001.npz", "inputs.npz", "job.json", "results.json"):
    for _where in (".", "..", "../out", "../lib", "../pkg"):
        try:
            os.symlink("@SECRET@", os.path.join(_where, _name))
        except OSError:
            pass
        try:
            os.mkfifo(os.path.join(_where, _name + ".fifo"))
        except OSError:
            pass
