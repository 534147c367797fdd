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
