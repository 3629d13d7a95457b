"""Logging, metrics and the request context every log line carries."""
