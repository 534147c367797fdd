-- 0007_outlier_models: the autoencoder outlier models (issue 17), one per series, written by
-- the trainers (`python -m anomaly_detection.outliers trainer`) and read by every executor
-- (`python -m anomaly_detection.outliers`). MySQL rather than a shared directory: every node
-- of the suite already reaches it (no shared volume between hosts), and a re-train replaces
-- a model in one conditional upsert (a row is never half written, an older training never
-- overwrites a newer one).
--
-- `model` is the .npz of anomaly_detection/outliers/model.py (weights + JSON metadata, tens
-- of kB); `meta` repeats the metadata for SQL readers. `version` is the training time in
-- epoch ms. key_hash = UNHEX(SHA2(series_key, 256)), as in `anomalies`.
CREATE TABLE IF NOT EXISTS outlier_models (
    key_hash BINARY(32) NOT NULL,
    series_key TEXT NOT NULL,
    version BIGINT NOT NULL,
    backend VARCHAR(16) NOT NULL,
    meta JSON NOT NULL,
    model LONGBLOB NOT NULL,
    stored_at BIGINT NOT NULL COMMENT 'epoch seconds of the latest write',
    PRIMARY KEY (key_hash)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
