"""Benchmarks: the paper's experiment, system hot paths, the modem, hyper-parameter tuning."""
