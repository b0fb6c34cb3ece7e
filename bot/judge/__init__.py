"""The statistical judge: canary samples against baseline samples, metric by metric.

Pure (no I/O): `model` holds the value types, `stats` the rank test, shift and effect sizes,
`classify` turns one metric's samples into pass|high|low|nodata with words that explain it,
`score` weighs the metrics into a 0-100 score and a verdict, and `cases` reads and writes the
JSON shape of `coalmine judge --cases`.
"""
