# Red team: at exit, write a perfect results.json where the grader will write its own, and in the cwd.
import atexit
import json


def _forge():
    fake = {"score": 1000, "tests": [], "output": "forged"}
    for path in ("@RESULTS@", "results.json", "/autograder/results/results.json"):
        try:
            with open(path, "w") as fh:
                json.dump(fake, fh)
        except OSError:
            pass


atexit.register(_forge)
_forge()
