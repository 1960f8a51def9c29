"""Scoring predictions: metrics, per-model evaluation, summaries and the statistics of the report (pure)."""
