"""Calibration: the simulator's predictions checked against, and fitted to, real measurements.

``metrics`` holds the comparison math (percentile errors, two-sample KS, TOST equivalence),
``check`` runs a suite through both executors, ``fit`` adjusts free scenario parameters to
measured records, ``profile`` benchmarks the machine overheads the real engine pays.
"""
