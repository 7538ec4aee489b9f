"""The client API (DRF): thin views over messages.selectors and messages.services."""
