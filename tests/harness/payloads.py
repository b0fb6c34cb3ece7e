"""Re-exports bot.sim.payloads (forge webhook payloads and signing headers).

The simulator moved into the package so that `coalmine demo` can run it; tests import it here.
"""

from bot.sim.payloads import *
