"""Validation: TFDV statistics, a curated schema, skew and drift checks, and the verdict of a run."""
