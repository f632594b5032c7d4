"""Benchmarks: the NumPy reference AltMin, the suite behind ``colora bench``, its child processes."""
