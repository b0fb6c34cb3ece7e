"""The PR preview's pure core: what a merge would change (model, diff), what it would start
(plan) and how that is told on the PR (render). handlers/preview.py gathers the facts."""
