-- 0006_batch_models: the batch anomaly models (python -m anomaly_detection.batch, Spark).
--
--   anomalies.score          a batch model's score of one point in [0, 1] (NULL: a window of
--                            the streaming detector, which has a deviation, not a score).
--                            A batch model writes one row per point: window_start_ms = the
--                            point's time, window_end_ms = + step, status ERROR when the
--                            point is flagged, else SAFE; key (series, detector, time).
--   anomaly_models           one row per trained model version of one series: training
--                            window, parameters, features, threshold and the artefact (the
--                            fitted model, pickled, with its SHA-256); the newest id of a
--                            (model, series) is the one `score` uses.
--   anomaly_batch_runs       one row per train/score run: `running` from its start,
--                            `complete` only when every series was done or skipped for a
--                            typed reason (skips: JSON), `failed` otherwise.
SET @sla_add_column := (
    SELECT IF(COUNT(*) = 0, 'ALTER TABLE anomalies ADD COLUMN score DOUBLE NULL', 'DO 0')
    FROM information_schema.COLUMNS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'anomalies' AND COLUMN_NAME = 'score'
);
PREPARE sla_add_column FROM @sla_add_column;
EXECUTE sla_add_column;
DEALLOCATE PREPARE sla_add_column;

CREATE TABLE IF NOT EXISTS anomaly_models (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    model VARCHAR(64) NOT NULL,
    version VARCHAR(32) NOT NULL,
    key_hash BINARY(32) NOT NULL,
    series_key TEXT NOT NULL,
    metric VARCHAR(1024) NOT NULL,
    labels JSON NOT NULL,
    run_id BIGINT UNSIGNED NOT NULL,
    trained_at BIGINT NOT NULL COMMENT 'epoch seconds',
    train_start BIGINT NOT NULL COMMENT 'epoch seconds of the first training point',
    train_end BIGINT NOT NULL COMMENT 'epoch seconds of the last training point',
    step_s DOUBLE NOT NULL,
    points INT NOT NULL,
    params JSON NOT NULL,
    features JSON NOT NULL,
    threshold DOUBLE NOT NULL,
    artefact LONGBLOB NOT NULL,
    artefact_sha256 CHAR(64) NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_anomaly_models_version (key_hash, model, version),
    KEY idx_anomaly_models_trained (model, trained_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS anomaly_batch_runs (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    model VARCHAR(64) NOT NULL,
    kind VARCHAR(16) NOT NULL COMMENT 'train or score',
    status VARCHAR(16) NOT NULL COMMENT 'running, complete or failed',
    started_at DOUBLE NOT NULL,
    finished_at DOUBLE NULL,
    range_start BIGINT NOT NULL,
    range_end BIGINT NOT NULL,
    spark_master VARCHAR(255) NOT NULL,
    series_total INT NOT NULL DEFAULT 0,
    series_done INT NOT NULL DEFAULT 0,
    points INT NOT NULL DEFAULT 0,
    skips JSON NULL,
    error TEXT NULL,
    PRIMARY KEY (id),
    KEY idx_anomaly_batch_runs (model, kind, started_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
