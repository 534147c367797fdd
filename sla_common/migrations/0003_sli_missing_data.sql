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
