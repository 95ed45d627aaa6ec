"""The pure core: paths, conditions, templates, triggers, the step machine and retry timing.
Nothing here does I/O (no asyncio, sqlalchemy, redis, httpx or aiosmtplib)."""
