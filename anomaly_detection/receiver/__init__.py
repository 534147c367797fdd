"""``python -m anomaly_detection.receiver``: Prometheus remote write (v1) into Kafka ``samples``.

``POST /api/v1/write`` takes what Prometheus' ``remote_write`` sends (a snappy block-compressed
protobuf ``prometheus.WriteRequest``) and publishes every finite sample to the samples topic
(``KAFKA_SAMPLES_TOPIC``), one record per series per request, keyed by the series key
(:mod:`sla_common.samples`). It answers 204 only once the broker acknowledged every record of
the request; when the broker is down or slow it answers 503 with ``Retry-After``, so
Prometheus keeps the samples and sends them again. ``/metrics`` serves its own counters.
"""
