"""A FakeKube in its own process, so a client under test does not share its interpreter.

Writes the kubeconfig to the given path, prints the server URL, and serves until stdin closes.

    python -m bench.fake_kube_process KUBECONFIG_PATH
"""

from __future__ import annotations

import sys

from tests.harness.kube import FakeKube


def main() -> int:
    kube = FakeKube().start()
    kube.write_kubeconfig(sys.argv[1])
    print(kube.url, flush=True)
    sys.stdin.read()  # the parent closes our stdin to stop us
    kube.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
