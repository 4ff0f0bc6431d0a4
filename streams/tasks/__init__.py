"""Playbook tasks: the pure state machine (no Kafka, no Redis, no clock); the worker, the web API and
the command line drive it."""
