-- SLA Monitor: the whole MySQL schema in one idempotent file.
-- GENERATED from sla_common/migrations/*.sql by `python -m sla_common.migrate schema
-- --write`; edit the migrations, not this file. Apply to an existing database:
--     mariadb DBNAME < db/Database.sql      (or: python -m sla_common.migrate)

CREATE TABLE IF NOT EXISTS schema_migrations (
    version INT NOT NULL,
    name VARCHAR(128) NOT NULL,
    checksum CHAR(64) NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- ---- 0001_initial.sql

-- 0001_initial: every table the suite reads and writes.
--
-- Conventions (all tables):
--   * Times are BIGINT epoch seconds, UTC by definition (as in the Kafka messages); no
--     DATETIME, so no session time zone can shift them.
--   * Numbers are DOUBLE / INT / BIGINT columns, never strings.
--   * Every table has a natural unique key (the PRIMARY KEY, or a UNIQUE key next to a
--     surrogate id) so that a redelivered Kafka message upserts instead of duplicating.
--   * Per-timestamp tables (hp_points, decomposition_points, forecast_points) are keyed by
--     (series_id, ts): each ETL run re-analyses an overlapping window, and the analysis of
--     the newest window wins for a timestamp. `window_end` records which window a row
--     comes from; data_storage never lets an older window overwrite a newer one, so the
--     stored state does not depend on the order in which messages arrive.
--   * Per-run tables (analyses, adf, aggregates, forecast_summary, skipped_analyses) are
--     keyed by (series_id, window_end, ...): one row per analysed window, history kept until
--     the retention purge; a re-run of the same window replaces it (newest produced_at wins).
--   * acf is keyed by (series_id, lag_k): the latest autocorrelation of each series.
--   * The `KEY ... (ts)` / `(window_end)` indexes serve time-range queries across series and
--     the retention purge; "this series, this time range" uses the primary key.
--   * No foreign keys: bulk upserts and the purge stay cheap; series_id values are never
--     reused (AUTO_INCREMENT), so an orphan row can never be attributed to another series.

-- One row per series (metric + label set). key_hash = UNHEX(SHA2(series_key, 256)): keys
-- can be 4 KiB long, too long for a unique index themselves.
CREATE TABLE IF NOT EXISTS series (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    key_hash BINARY(32) NOT NULL,
    series_key TEXT NOT NULL,
    metric VARCHAR(1024) NOT NULL,
    labels JSON NOT NULL,
    selector TEXT NOT NULL,
    transform VARCHAR(16) NOT NULL,
    first_seen BIGINT NOT NULL COMMENT 'window end of the first analysis stored',
    last_seen BIGINT NOT NULL COMMENT 'window end of the latest analysis stored',
    PRIMARY KEY (id),
    UNIQUE KEY uq_series_key_hash (key_hash),
    KEY idx_series_metric (metric(191)),
    KEY idx_series_last_seen (last_seen)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per ETL run: the window every series of the run was analysed over.
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR(64) NOT NULL,
    window_start BIGINT NOT NULL,
    window_end BIGINT NOT NULL,
    step_s INT NOT NULL,
    first_produced_at BIGINT NOT NULL,
    last_produced_at BIGINT NOT NULL,
    PRIMARY KEY (run_id),
    KEY idx_runs_window_end (window_end)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per analysed series per window: the message's header and the scalar parameters
-- of the per-point analyses (HP lambda, ACF confidence bound, decomposition period).
CREATE TABLE IF NOT EXISTS analyses (
    series_id BIGINT UNSIGNED NOT NULL,
    window_end BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    step_s INT NOT NULL,
    run_id VARCHAR(64) NOT NULL,
    produced_at BIGINT NOT NULL,
    schema_version SMALLINT NOT NULL,
    samples INT NOT NULL,
    interpolated INT NOT NULL,
    grid_start BIGINT NOT NULL,
    grid_step_s INT NOT NULL,
    grid_count INT NOT NULL,
    hp_lambda DOUBLE NULL,
    acf_conf_bound DOUBLE NULL,
    decomposition_period INT NULL,
    seasonal_strength DOUBLE NULL,
    skipped_count INT NOT NULL,
    durations_ms JSON NOT NULL,
    PRIMARY KEY (series_id, window_end),
    KEY idx_analyses_window_end (window_end),
    KEY idx_analyses_run (run_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Augmented Dickey-Fuller test of each window.
CREATE TABLE IF NOT EXISTS adf (
    series_id BIGINT UNSIGNED NOT NULL,
    window_end BIGINT NOT NULL,
    statistic DOUBLE NOT NULL,
    pvalue DOUBLE NOT NULL,
    used_lag INT NOT NULL,
    nobs INT NOT NULL,
    crit_1pct DOUBLE NOT NULL,
    crit_5pct DOUBLE NOT NULL,
    crit_10pct DOUBLE NOT NULL,
    stationary BOOLEAN NOT NULL COMMENT 'at the 5 % level',
    autolag VARCHAR(16) NULL,
    run_id VARCHAR(64) NOT NULL,
    produced_at BIGINT NOT NULL,
    PRIMARY KEY (series_id, window_end),
    KEY idx_adf_window_end (window_end)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Hodrick-Prescott filter: trend and cycle per grid timestamp.
CREATE TABLE IF NOT EXISTS hp_points (
    series_id BIGINT UNSIGNED NOT NULL,
    ts BIGINT NOT NULL,
    trend DOUBLE NOT NULL,
    cycle DOUBLE NOT NULL,
    window_end BIGINT NOT NULL,
    PRIMARY KEY (series_id, ts),
    KEY idx_hp_points_ts (ts)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Autocorrelation function of the latest window, lag 0..nlags.
CREATE TABLE IF NOT EXISTS acf (
    series_id BIGINT UNSIGNED NOT NULL,
    lag_k INT NOT NULL,
    value DOUBLE NOT NULL,
    window_end BIGINT NOT NULL,
    PRIMARY KEY (series_id, lag_k),
    KEY idx_acf_window_end (window_end)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Seasonal decomposition per grid timestamp.
CREATE TABLE IF NOT EXISTS decomposition_points (
    series_id BIGINT UNSIGNED NOT NULL,
    ts BIGINT NOT NULL,
    trend DOUBLE NOT NULL,
    seasonal DOUBLE NOT NULL,
    resid DOUBLE NOT NULL,
    window_end BIGINT NOT NULL,
    PRIMARY KEY (series_id, ts),
    KEY idx_decomposition_points_ts (ts)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Aggregates over the last 1h / 3h / 12h of each window (window_end = the aggregate's end).
CREATE TABLE IF NOT EXISTS aggregates (
    series_id BIGINT UNSIGNED NOT NULL,
    window_name VARCHAR(16) NOT NULL,
    window_end BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    sample_count INT NOT NULL,
    max_value DOUBLE NOT NULL,
    min_value DOUBLE NOT NULL,
    mean_value DOUBLE NOT NULL,
    std_value DOUBLE NOT NULL,
    run_id VARCHAR(64) NOT NULL,
    produced_at BIGINT NOT NULL,
    PRIMARY KEY (series_id, window_name, window_end),
    KEY idx_aggregates_window_end (window_end)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Forecast points: the freshest forecast of each future timestamp, with the run that made
-- it (produced_at, window_end) so a reader can tell how old it is.
CREATE TABLE IF NOT EXISTS forecast_points (
    series_id BIGINT UNSIGNED NOT NULL,
    ts BIGINT NOT NULL,
    value DOUBLE NOT NULL,
    lower80 DOUBLE NOT NULL,
    upper80 DOUBLE NOT NULL,
    lower95 DOUBLE NOT NULL,
    upper95 DOUBLE NOT NULL,
    window_end BIGINT NOT NULL,
    produced_at BIGINT NOT NULL,
    run_id VARCHAR(64) NOT NULL,
    PRIMARY KEY (series_id, ts),
    KEY idx_forecast_points_ts (ts)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Forecast summary per window and horizon: max / min / mean of the forecast points.
CREATE TABLE IF NOT EXISTS forecast_summary (
    series_id BIGINT UNSIGNED NOT NULL,
    window_end BIGINT NOT NULL,
    horizon_s INT NOT NULL,
    model VARCHAR(128) NOT NULL,
    step_s INT NOT NULL,
    history_points INT NOT NULL,
    horizon_start BIGINT NOT NULL COMMENT 'timestamp of the first forecast point',
    horizon_end BIGINT NOT NULL COMMENT 'timestamp of the last forecast point',
    point_count INT NOT NULL,
    max_value DOUBLE NOT NULL,
    min_value DOUBLE NOT NULL,
    mean_value DOUBLE NOT NULL,
    run_id VARCHAR(64) NOT NULL,
    produced_at BIGINT NOT NULL,
    PRIMARY KEY (series_id, window_end, horizon_s),
    KEY idx_forecast_summary_window_end (window_end)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Analyses the ETL skipped on a window, and why (e.g. history shorter than two seasons).
CREATE TABLE IF NOT EXISTS skipped_analyses (
    series_id BIGINT UNSIGNED NOT NULL,
    window_end BIGINT NOT NULL,
    analysis VARCHAR(64) NOT NULL,
    reason VARCHAR(255) NOT NULL,
    detail TEXT NOT NULL,
    run_id VARCHAR(64) NOT NULL,
    produced_at BIGINT NOT NULL,
    PRIMARY KEY (series_id, window_end, analysis),
    KEY idx_skipped_analyses_window_end (window_end)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Service-level indicators, managed by sla_manager's REST API: a PromQL selector and the
-- range its value must stay in (either bound may be absent). name is the URL slug.
CREATE TABLE IF NOT EXISTS slis (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    name VARCHAR(128) NOT NULL,
    selector TEXT NOT NULL,
    min_value DOUBLE NULL,
    max_value DOUBLE NULL,
    description VARCHAR(2048) NOT NULL DEFAULT '',
    labels JSON NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_slis_name (name),
    CONSTRAINT ck_slis_range CHECK (min_value IS NULL OR max_value IS NULL OR min_value <= max_value)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- ---- 0002_slos.sql

-- 0002_slos: service-level objectives, managed by sla_manager's REST API (/slos).
--
-- An SLO is an SLI (sli_name: an existing threshold SLI of `slis`, or NULL for an event
-- ratio whose two PromQL queries are in the definition), an objective and a period. The
-- definition column holds the request body as JSON (objective, period, ratio, labels...):
-- the API validates it, and the rules Prometheus evaluates are generated from it.
CREATE TABLE IF NOT EXISTS slos (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    name VARCHAR(128) NOT NULL,
    sli_name VARCHAR(128) NULL COMMENT 'threshold SLOs: the name of their SLI in slis',
    definition JSON NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_slos_name (name),
    KEY idx_slos_sli_name (sli_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- ---- 0003_sli_missing_data.sql

-- 0003_sli_missing_data: an SLI's choice whether missing data counts as a violation
-- (sla_manager: a series without data, or a selector matching nothing, is reported as
-- no_data either way; default: not a violation).
--
-- Written to be re-runnable on MySQL and MariaDB alike (no ADD COLUMN IF NOT EXISTS in
-- MySQL): the column is added only when information_schema does not list it yet.
SET @sla_add_column := (
    SELECT IF(COUNT(*) = 0,
        'ALTER TABLE slis ADD COLUMN missing_data_is_violation BOOLEAN NOT NULL DEFAULT FALSE AFTER labels',
        'DO 0')
    FROM information_schema.COLUMNS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'slis'
        AND COLUMN_NAME = 'missing_data_is_violation'
);
PREPARE sla_add_column FROM @sla_add_column;
EXECUTE sla_add_column;
DEALLOCATE PREPARE sla_add_column;

-- ---- 0004_forecast_distribution.sql

-- 0004_forecast_distribution: the forecast's predictive distribution, and the breach
-- probability an SLI counts as a predicted violation.
--
--   forecast_points.loc, .scale      each point's distribution, max(floor, loc + scale·T)
--                                    (NULL: a forecast of an ETL that did not send them)
--   forecast_summary.distribution    what T is: 'normal' or 'student_t' (with df degrees
--                   .df              of freedom); NULL with loc/scale absent
--   forecast_summary.value_floor     the domain's lower limit (0 for a non-negative
--                                    series), NULL: none (not named `floor`: a built-in
--                                    function's name, reserved under IGNORE_SPACE/ANSI)
--   slis.breach_probability_threshold
--                                    sla_manager: a forecast whose probability of leaving
--                                    the range within the horizon is at least this is a
--                                    predicted violation (default 0.5)
--
-- Nullable or defaulted columns added at the end of their tables: an instant ALTER on
-- MariaDB >= 10.3 and MySQL >= 8.0.12, whatever the size of forecast_points. Re-runnable on
-- MySQL and MariaDB alike, as 0003: each ALTER runs only when information_schema does not
-- list its first column yet (one ALTER is atomic, so its columns come all or none).
SET @sla_add_column := (
    SELECT IF(COUNT(*) = 0,
        'ALTER TABLE forecast_points ADD COLUMN loc DOUBLE NULL, ADD COLUMN scale DOUBLE NULL',
        'DO 0')
    FROM information_schema.COLUMNS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'forecast_points'
        AND COLUMN_NAME = 'loc'
);
PREPARE sla_add_column FROM @sla_add_column;
EXECUTE sla_add_column;
DEALLOCATE PREPARE sla_add_column;

SET @sla_add_column := (
    SELECT IF(COUNT(*) = 0,
        'ALTER TABLE forecast_summary ADD COLUMN distribution VARCHAR(16) NULL, ADD COLUMN df DOUBLE NULL, ADD COLUMN value_floor DOUBLE NULL',
        'DO 0')
    FROM information_schema.COLUMNS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'forecast_summary'
        AND COLUMN_NAME = 'distribution'
);
PREPARE sla_add_column FROM @sla_add_column;
EXECUTE sla_add_column;
DEALLOCATE PREPARE sla_add_column;

SET @sla_add_column := (
    SELECT IF(COUNT(*) = 0,
        'ALTER TABLE slis ADD COLUMN breach_probability_threshold DOUBLE NOT NULL DEFAULT 0.5',
        'DO 0')
    FROM information_schema.COLUMNS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'slis'
        AND COLUMN_NAME = 'breach_probability_threshold'
);
PREPARE sla_add_column FROM @sla_add_column;
EXECUTE sla_add_column;
DEALLOCATE PREPARE sla_add_column;

-- ---- 0005_anomalies.sql

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

-- ---- 0006_batch_models.sql

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

-- ---- 0007_outlier_models.sql

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

-- ---- 0008_anomaly_normal_period.sql

-- 0008_anomaly_normal_period: which learned normal judged a streaming window (issue 13).
--
--   anomalies.normal_period_s   0: the plain learned normal (no cycle), or a static one, or
--                               none (LEARNING); else the period in seconds of the series'
--                               cycle the learned normal followed (86400 a day, 604800 a
--                               week). NULL: a record of schema version 1 (not said) or a
--                               batch model's point.
--
-- A nullable column added at the end of the table: an instant ALTER on MariaDB >= 10.3 and
-- MySQL >= 8.0.12. Re-runnable on both, as 0003/0004: the ALTER runs only when
-- information_schema does not list the column yet.
SET @sla_add_column := (
    SELECT IF(COUNT(*) = 0,
        'ALTER TABLE anomalies ADD COLUMN normal_period_s INT NULL',
        'DO 0')
    FROM information_schema.COLUMNS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'anomalies'
        AND COLUMN_NAME = 'normal_period_s'
);
PREPARE sla_add_column FROM @sla_add_column;
EXECUTE sla_add_column;
DEALLOCATE PREPARE sla_add_column;

-- ---- record the migrations above as applied
INSERT IGNORE INTO schema_migrations (version, name, checksum, applied_at) VALUES (1, 'initial', '964cce1536fc70b2203a978b7757291fb96f0fd6fdf63c8e0db14ec4699304b4', UNIX_TIMESTAMP());
INSERT IGNORE INTO schema_migrations (version, name, checksum, applied_at) VALUES (2, 'slos', '0a6e2f66f04bf3a2db2dc21e5a4b72ec50ed01ab5226d5e38b5e40a479a837cd', UNIX_TIMESTAMP());
INSERT IGNORE INTO schema_migrations (version, name, checksum, applied_at) VALUES (3, 'sli_missing_data', '7dcff9407838091bd23c1aca0015b7b81b3d3e33c3b97380289fd9441767bec1', UNIX_TIMESTAMP());
INSERT IGNORE INTO schema_migrations (version, name, checksum, applied_at) VALUES (4, 'forecast_distribution', '7a152810d1ef129fd37b0556540d0b991b385d3d0cec375bb237c82cc4885445', UNIX_TIMESTAMP());
INSERT IGNORE INTO schema_migrations (version, name, checksum, applied_at) VALUES (5, 'anomalies', 'dd64631d1744391dee4a1bee3b6b32be8cdabe063b9d2570a50490445e95c4c0', UNIX_TIMESTAMP());
INSERT IGNORE INTO schema_migrations (version, name, checksum, applied_at) VALUES (6, 'batch_models', '595b2a7d7a1bca58c2761a116baf0976868c623a314d35dd97ac0ceeb0bae19e', UNIX_TIMESTAMP());
INSERT IGNORE INTO schema_migrations (version, name, checksum, applied_at) VALUES (7, 'outlier_models', '7f7c8833f9ebcbfd008786d7484979d4a266090f84a5c9d6ba04567673f9d221', UNIX_TIMESTAMP());
INSERT IGNORE INTO schema_migrations (version, name, checksum, applied_at) VALUES (8, 'anomaly_normal_period', '14982f92692032fa94f1e518b361f9c3bc420bd06186ccc57be6742d0a6f07da', UNIX_TIMESTAMP());
