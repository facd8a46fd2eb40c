"""The bench's PNG: latency distributions, per-worker fairness bars, and recovery times, one panel each.

matplotlib is an extra (``lockd[bench]``) and is imported only here, with the Agg backend so that it works on
a server without a display.
"""

from __future__ import annotations

from typing import Any

from lockd.bench.report import Report

COLORS = {"lockd": "#1b7837", "tooz": "#c51b7d", "oslo-file": "#4393c3", "etcd-floor": "#8c8c8c"}


def _cdf(ax: Any, samples: dict[str, list[float]], title: str) -> None:
    for target, values in samples.items():
        if not values:
            continue
        ms = sorted(v * 1000.0 for v in values)
        ys = [(i + 1) / len(ms) for i in range(len(ms))]
        ax.step(ms, ys, where="post", label=f"{target} (n={len(ms)})", color=COLORS.get(target), linewidth=1.6)
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds (log scale)")
    ax.set_ylabel("fraction of samples")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8, loc="lower right")


def _fairness(ax: Any, counts: dict[str, list[int]], jains: dict[str, Any], title: str) -> None:
    targets = [t for t in counts if counts[t]]
    workers = max((len(counts[t]) for t in targets), default=0)
    width = 0.8 / max(1, len(targets))
    for i, target in enumerate(targets):
        xs = [w + (i - (len(targets) - 1) / 2) * width for w in range(len(counts[target]))]
        jain = jains.get(target)
        label = f"{target} (Jain {jain:.2f})" if isinstance(jain, float) else target
        ax.bar(xs, counts[target], width=width, label=label, color=COLORS.get(target))
    ax.set_xticks(range(workers))
    ax.set_xticklabels([f"w{w}" for w in range(workers)])
    ax.set_xlabel("worker process")
    ax.set_ylabel("acquisitions while all compete")
    ax.set_title(title, fontsize=11)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def _grouped(ax: Any, groups: list[str], values: dict[str, list[float]], ylabel: str, title: str) -> None:
    width = 0.8 / max(1, len(values))
    for i, (target, ys) in enumerate(values.items()):
        xs = [g + (i - (len(values) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, ys, width=width, label=target, color=COLORS.get(target))
        ax.bar_label(
            bars, labels=[f"{y:.3f}" if y < 1 else f"{y:.2f}" if y < 100 else f"{y:.0f}" for y in ys], fontsize=8
        )
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def write_plot(report: Report, path: str) -> None:
    """Write a 2x2 PNG to ``path``; panels of scenarios that did not run say so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
    (a, b), (c, d) = axes
    un = report.scenario("uncontended")
    if un:
        _cdf(a, un.samples, f"uncontended acquire+release latency ({un.params['ops']} ops per target)")
    else:
        _empty(a, "uncontended: not run")
    co = report.scenario("contention")
    if co:
        procs, cycles = co.params["processes"], co.params["cycles"]
        _cdf(b, co.samples, f"handoff: release -> next waiter holds ({procs} processes x {cycles} cycles)")
        jains = {t: m.get("jain") for t, m in co.metrics.items()}
        _fairness(c, co.details.get("window_counts", {}), jains, "fairness: per-worker acquisitions (contended window)")
    else:
        _empty(b, "contention: not run")
        _empty(c, "contention: not run")
    cr = report.scenario("crash")
    le = report.scenario("leases")
    if cr:
        values = {t: [m.get("sigkill_s", 0.0), m.get("clean_stop_s", 0.0)] for t, m in cr.metrics.items()}
        _grouped(d, ["holder SIGKILLed", "holder stopped cleanly"], values, "seconds until a waiter holds",
                 f"recovery (TTL {cr.params['lease_ttl_s']:g} s for both)")  # fmt: skip
    elif le:
        values = {t: [m["leases_live"], m["leases_after_stop"]] for t, m in le.metrics.items()}
        _grouped(d, ["live coordinator", "after stop()"], values, "etcd leases", le.title)
    else:
        _empty(d, "crash / leases: not run")
    m = report.machine
    fig.suptitle(
        f"lockd bench: lockd vs stock tooz on one etcd {m['etcd_version']} ({m['nproc']} CPUs, Python {m['python']})",
        fontsize=13,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="#666666")
    ax.set_axis_off()
