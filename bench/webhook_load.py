"""Issue 4's `bench/webhook_load`: the same measurement as bench/webhook_intake.

    .venv/bin/python -m bench.webhook_load [--seconds 4] [--concurrency 4,8,16,32]
"""

from __future__ import annotations

from bench.webhook_intake import main

if __name__ == "__main__":
    raise SystemExit(main())
