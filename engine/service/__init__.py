"""engine/service."""
