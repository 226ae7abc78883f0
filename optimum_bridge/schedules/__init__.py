"""Schedules (spec §15): one batch per tick, exactly once across workers and restarts, on the Redis clock.

``model`` (what a schedule is, checked whole when saved), ``ticks`` (cron in
an IANA zone with DST, or a period), ``templates`` (operations rendered in
Jinja2's sandbox), ``store`` (Redis: definitions, state, the due set and the
atomic tick claim), ``runner`` (the upkeep timer that turns due ticks into
batches) and ``outlook`` (next ticks and the finish forecast).
"""
