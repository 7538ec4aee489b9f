"""Operators' view of the platform: Prometheus metrics, log context, the admin overview's data."""
