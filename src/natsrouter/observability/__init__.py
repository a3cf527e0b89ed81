"""Metrics, logs and the HTTP endpoints that expose them."""
