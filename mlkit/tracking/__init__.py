"""Tracking: the file store (MLflow layout), fluent API, client and search."""
