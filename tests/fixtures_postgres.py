"""Fixtures that start a real PostgreSQL server."""
