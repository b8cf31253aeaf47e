# Red team: leave the interpreter while the module is being imported.
import os
os._exit(0)
