"""One router per resource: health, locks, members, status, audit, waits, history, profile, metrics."""
