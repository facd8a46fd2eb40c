"""The live web console of `lockd serve` (``GET /``): held locks, queues, members, statuses, force-breaks.

Server-rendered pages (lockd.console.pages, templates/) refreshed in place by one small script (static/);
what they show comes from lockd.console.snapshot. ``create_app`` includes ``pages.router``.
"""
