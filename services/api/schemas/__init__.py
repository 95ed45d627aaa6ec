"""Request and response bodies of the HTTP API (kept apart from the tables), by domain."""
