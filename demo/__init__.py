"""Dev-only demo and test data generators (not shipped in the wheel)."""
