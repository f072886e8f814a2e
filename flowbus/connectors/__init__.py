"""Connectors: the step families that act on the outside world, and inbound business connectors."""
