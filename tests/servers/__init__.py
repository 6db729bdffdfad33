"""Loopback servers used by the adapter tests."""
