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
