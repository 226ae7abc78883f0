"""The dashboard at ``/ui`` (spec §14): the quota, lanes, batches, jobs and dead letters of the key's accounts.

Server-rendered Jinja2 pages (``templates/``) with their one stylesheet
(``static/``), a chart drawn as inline SVG on the server, no JavaScript and no
asset from elsewhere. ``security`` checks HTTP Basic (the API key as the
password) and guards every POST against cross-site requests; ``data`` reads
what a page shows from bounded indexes (never by scanning the jobs);
``chart`` lays the calls-per-minute chart out; ``routes`` serves it all.
"""

from __future__ import annotations

from optimum_bridge.ingress.ui.routes import router, static

__all__ = ["router", "static"]
