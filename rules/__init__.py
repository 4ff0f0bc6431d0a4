"""Trigger rules: a safe expression language, rule files, and the pending/firing/resolved engine."""
