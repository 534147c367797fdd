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
