"""Re-exports bot.sim.kube (the fake Kubernetes API server).

The simulator moved into the package so that `coalmine demo` can run it; tests import it here.
"""

from bot.sim.kube import *
