"""Column lists of tables that one service writes and another reads, in one place.

The tables themselves are defined by ``db/migrations``; these tuples are the order in which
data_storage writes a row and data_retrieval reads it back (positionally).
"""

from __future__ import annotations

# aggregates: after its key (series_id, window_name, window_end), whatever the key's order.
AGGREGATE_VALUE_COLUMNS = (
    "window_start",
    "sample_count",
    "max_value",
    "min_value",
    "mean_value",
    "std_value",
    "run_id",
    "produced_at",
)

FORECAST_SUMMARY_COLUMNS = (
    "series_id",
    "window_end",
    "horizon_s",
    "model",
    "step_s",
    "history_points",
    "horizon_start",
    "horizon_end",
    "point_count",
    "max_value",
    "min_value",
    "mean_value",
    "run_id",
    "produced_at",
)

# The forecast's predictive distribution (migration 0004), after the columns above:
# per point in forecast_points, per forecast in forecast_summary. NULL when the ETL that
# made the forecast did not send them.
FORECAST_POINT_DISTRIBUTION_COLUMNS = ("loc", "scale")
FORECAST_DISTRIBUTION_COLUMNS = ("distribution", "df", "value_floor")
