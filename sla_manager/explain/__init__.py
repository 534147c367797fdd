"""Explanations of SLI violations: which of many metric series changed (issue 15)."""
