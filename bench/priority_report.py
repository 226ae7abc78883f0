"""The tables and the chart of ``bench.priority``: urgent latency old against new, the forecast's error."""

from __future__ import annotations

import bisect
import math
from pathlib import Path
from typing import Any

from .priority_setup import PROCS, THREADS
from .report import print_table


def show(results: list[dict[str, Any]]) -> str:
    headers = ["quota", "design", "urgent", "API p50 s", "API p95 s", "API max s"]
    headers += ["started_at p50 s", "p95 s", "max s", "goal p95 <= s", "goal", "429", "max ok/win"]
    rows = []
    for r in results:
        goal = r["interval_s"] + 0.1
        new = r["design"].startswith("new")
        met = ("met" if r["start"]["p95"] <= goal else "MISSED") if new else "-"
        api, start = r["api"], r["start"]
        row = [r["quota"], r["design"], r["urgent"], api["p50"], api["p95"], api["max"]]
        row += [start["p50"], start["p95"], start["max"], round(goal, 3), met]
        rows.append([*row, r["rate_limited"], r["max_accepted_in_window"]])
    title = (
        f"Urgent start latency, {PROCS} procs x {THREADS} threads, deep bulk backlog "
        "(API = submit -> arrival at the API; started_at: the old design records none)"
    )
    text = print_table(title, headers, rows)
    for quota in dict.fromkeys(r["quota"] for r in results):
        pair = {r["design"].split()[0]: r["api"] for r in results if r["quota"] == quota}
        if "old" in pair and "new" in pair:
            line = (
                f"{quota}: old / new (submit -> API arrival), p50 {pair['old']['p50'] / pair['new']['p50']:.0f}x, "
                f"p95 {pair['old']['p95'] / pair['new']['p95']:.0f}x"
            )
            print(line)
            text += "\n" + line
    return text


def show_forecast(fc: dict[str, Any], results: list[dict[str, Any]]) -> str:
    headers = ["quota", "jobs", "|error| p50 s", "p95 s", "max s", "mean error s", "bound +- s", "within bound"]
    err = fc["abs_error"]
    row = [fc["quota"], fc["jobs"], err["p50"], err["p95"], err["max"], fc["mean_error_s"], fc["bound_s"]]
    row.append(f"{fc['within_bound']}/{fc['jobs'] - fc['without_forecast']}")
    text = print_table("Forecast error (estimated_start_at read right after submit - started_at)", headers, [row])
    b = fc["batch"]
    line = f"batch of {b['size']} behind them: estimated_done_at - last job's started_at = {b['error_s']:+.2f} s"
    if fc["without_forecast"]:
        line += f"\n{fc['without_forecast']} job(s) had started before their forecast was read (no forecast)"
    for r in results:
        err = r["forecast_abs_error"]
        if r["design"].startswith("new") and not math.isnan(err["max"]):
            line += (
                f"\nurgent jobs into the {r['quota']} backlog: |estimated_start_at - started_at| "
                f"p50 {err['p50']:.2f} s, p95 {err['p95']:.2f} s, max {err['max']:.2f} s "
                f"(bound +- {r['interval_s'] + 1:.2f} s)"
            )
    print(line)
    return text + "\n" + line


def chart(results: list[dict[str, Any]], path: Path) -> None:
    """Per quota (rows) and design (columns): calls so far against time, urgent jobs marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quotas = list(dict.fromkeys(r["quota"] for r in results))
    designs = list(dict.fromkeys(r["design"] for r in results))
    fig, axes = plt.subplots(len(quotas), len(designs), figsize=(7 * len(designs), 3.6 * len(quotas)), squeeze=False)
    for row, quota in enumerate(quotas):
        for col, design in enumerate(designs):
            ax = axes[row][col]
            r = next(x for x in results if x["quota"] == quota and x["design"] == design)
            calls = sorted(r["arrivals"])
            times = [c[0] for c in calls]
            ax.step(times, range(1, len(times) + 1), where="post", color="0.5", lw=1, label="calls (all)")
            for job in r["urgent_jobs"]:
                at = job["submit_s"] + job["api_s"]
                count = bisect.bisect_right(times, at)
                ax.hlines(count, job["submit_s"], at, color="tab:red", lw=1, alpha=0.6)
                ax.plot([at], [count], "o", color="tab:red", ms=4)
                ax.plot([job["submit_s"]], [count], "v", color="tab:orange", ms=5)
            ax.plot([], [], "v", color="tab:orange", label="urgent submitted")
            ax.plot([], [], "o", color="tab:red", label="its call reaches the API")
            refused = [c[0] for c in calls if not c[2]]
            if refused:
                ax.plot(refused, [0] * len(refused), "rx", label="429")
            ax.set_title(f"{design}, {quota}: urgent submit -> API p95 {r['api']['p95']:.2f} s", fontsize=9)
            ax.set_xlabel("seconds since the backlog was submitted")
            ax.set_ylabel("calls so far")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Calls against time (sandbox call log): urgent jobs into a deep bulk backlog", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
