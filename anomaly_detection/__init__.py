"""Anomaly detection: the remote-write receiver, the streaming detector."""
