"""Pastell REST API v2 compatibility layer (``/api/v2``): business software written for Pastell works unchanged."""
