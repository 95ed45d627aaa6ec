"""`make chaos`: a soak under faults that checks CONTRACT §5 end to end, "nothing lost, nothing
twice". Real processes (the API, two workers) against real services (PostgreSQL behind a TCP
proxy, a private redis-server, an SMTP sink, a webhook receiver), all on 127.0.0.1; one table
and a verdict at the end. See `python -m chaos --help`."""
