"""Isolation-forest anomaly scoring on Apache Spark: ``python -m anomaly_detection.batch``.

:mod:`.core` (per series, no Spark), :mod:`.fetch` (Prometheus), :mod:`.store` (MySQL),
:mod:`.job` (Spark), :mod:`.metrics` (the schedule's /metrics).
"""
