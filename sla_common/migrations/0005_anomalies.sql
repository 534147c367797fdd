-- 0005_anomalies: the anomaly detectors' window results (Kafka topic `anomaly`, the record
-- of sla_common/anomalies.py), stored by data_storage, read by sla_manager (GET /anomalies,
-- an SLI's status) and data_retrieval (ListAnomalies).
--
-- One row per (series, detector, window start): the record's idempotency key, so a
-- redelivered record upserts the same row. Every detector writes here: the streaming
-- sigma rule (`sigma`) and later the batch models (`iforest`, `autoencoder`).
-- Window times are BIGINT epoch *milliseconds* (windows can be 500 ms long); series are
-- referred to by key_hash = UNHEX(SHA2(series_key, 256)), as in `series`, without a row
-- there: the detector sees series the ETL does not analyse.
CREATE TABLE IF NOT EXISTS anomalies (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    key_hash BINARY(32) NOT NULL,
    detector VARCHAR(64) NOT NULL,
    window_start_ms BIGINT NOT NULL,
    window_end_ms BIGINT NOT NULL,
    series_key TEXT NOT NULL,
    metric VARCHAR(1024) NOT NULL,
    labels JSON NOT NULL,
    detector_version VARCHAR(32) NOT NULL,
    schema_version SMALLINT NOT NULL,
    sample_count INT NOT NULL,
    mean DOUBLE NOT NULL,
    std DOUBLE NOT NULL,
    normal_mean DOUBLE NOT NULL,
    normal_std DOUBLE NOT NULL,
    normal_source VARCHAR(16) NOT NULL,
    deviation DOUBLE NOT NULL,
    status VARCHAR(16) NOT NULL,
    stored_at BIGINT NOT NULL COMMENT 'epoch seconds of the latest write',
    PRIMARY KEY (id),
    UNIQUE KEY uq_anomalies_window (key_hash, detector, window_start_ms),
    KEY idx_anomalies_start (window_start_ms),
    KEY idx_anomalies_status (status, window_start_ms),
    KEY idx_anomalies_metric (metric(191), window_start_ms)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
