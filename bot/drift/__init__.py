"""Drift detection's pure parts: what to ignore (Argo CD's ignoreDifferences forms, server-side
apply field ownership), the per-app result, and the comment. The I/O is handlers/drift.py."""
