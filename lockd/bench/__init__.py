"""``lockd bench``: lockd against stock tooz, the oslo file lock and the raw etcd floor, in one run.

Layout: ``etcd.py`` starts a private etcd when no backend is given; ``targets.py`` builds each lock under test;
one module per scenario (``uncontended``, ``contention``, ``leases``, ``crash``, ``status``); ``runner.py`` runs
them and gathers a :class:`~lockd.bench.report.Report`; ``report.py`` prints the table and checks the floors of
issue 2; ``plot.py`` draws the PNG.
"""

from lockd.bench.runner import SCENARIOS, BenchConfig, run

__all__ = ["SCENARIOS", "BenchConfig", "run"]
