"""Converters from third-party data into healthmon's event contract v1 (for validation on data we did not write)."""
