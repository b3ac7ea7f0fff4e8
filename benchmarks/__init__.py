"""Measurements of the suite that are not tests: speed against the released code's way of working,
throughput under load, the reference baselines against anomalib, and the flows' diagnosis.

A package so that its scripts share code by plain imports: run each from the repository root as
``python -m benchmarks.<name>`` (see ``benchmarks/README.md``). Imports nothing, so that the anomalib
worker (``benchmarks.anomalib_worker``) can run in a virtualenv without ``bgad``.
"""
