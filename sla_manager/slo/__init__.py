"""SLOs: objectives over SLIs, error budgets and burn rates, and the Prometheus rules that
watch them (pure modules; the routes in :mod:`sla_manager.routes.slos` do the I/O)."""
