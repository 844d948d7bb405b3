"""Fixtures that start a real MLflow tracking server."""
