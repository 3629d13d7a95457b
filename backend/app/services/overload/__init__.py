"""Overload protection without HTTP: priorities, an adaptive concurrency limit, admission.

The pure ASGI middleware (app/middleware/load_shedder.py) asks these parts, per request, which
priority it has (`rules`), whether it may run now, wait briefly, or must be shed (`admission`),
and reports each finished request's latency to the limit (`limit`), which also weighs the
event-loop lag and database pool waiters sampled by `signals`. `markers` remembers which users
are taking a test, so their logins count as critical.
"""
