"""Re-exports bot.sim.exporter (the exporter a test dials traffic into).

The simulator moved into the package so that `coalmine demo` can run it; tests import it here.
"""

from bot.sim.exporter import *
