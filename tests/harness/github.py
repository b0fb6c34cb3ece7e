"""Re-exports bot.sim.github (the fake GitHub REST API and App).

The simulator moved into the package so that `coalmine demo` can run it; tests import it here.
"""

from bot.sim.github import *
