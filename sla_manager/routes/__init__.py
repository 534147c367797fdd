"""One router per resource: SLIs, their evaluations, the ETL's execution time, health."""
