"""Simulators of what Coalmine talks to, so that it can run with no outside service.

A fake Kubernetes API (`kube`), a fake GitHub REST API and App (`github`), GitOps repositories
served over git smart HTTP (`gitserver`), a Prometheus exporter with dialled-in traffic and a
small Prometheus query endpoint over it (`exporter`), and signed forge webhooks (`payloads`).

They began as the test suite's HTTP fakes (tests/harness re-exports them) and live in the
package for `coalmine demo` (bot/demo.py). Nothing in the product imports them but the demo;
an import-linter contract in pyproject.toml keeps it so.
"""
