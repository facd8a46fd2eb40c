"""One router per resource: health, locks, members, status, audit, metrics."""
