"""``healthmon serve``: the HTTP API and the dashboard page, reading the Redis read model."""
