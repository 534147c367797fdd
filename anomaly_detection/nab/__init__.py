"""NAB (Numenta Anomaly Benchmark) runner and scorer: ``python -m anomaly_detection.nab``."""
