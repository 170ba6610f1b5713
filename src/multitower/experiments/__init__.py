"""Experiments: whole recipes built from the library (models, data, train, eval)."""
