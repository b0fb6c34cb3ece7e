"""Re-exports bot.sim.gitserver (GitOps remotes and the git HTTP server).

The simulator moved into the package so that `coalmine demo` can run it; tests import it here.
"""

from bot.sim.gitserver import *
