"""Helpers shared by the test packages: a real `bentoml serve` subprocess and what it needs."""
