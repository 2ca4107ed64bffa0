"""Integrations with serving and evaluation engines; each module imports its engine, so import it only where the
engine is installed."""
