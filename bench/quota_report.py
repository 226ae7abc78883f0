"""The tables and the chart of ``bench.quota``: utilisation per case, calls in the trailing window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optimum_bridge.quota.rate import RateLimit

from .report import print_table


def show(quota: str, backlog: int, rows: list[dict[str, Any]], *, left_out: dict[str, str]) -> str:
    """The table of one quota; ``left_out`` names the cases not run at some quotas."""
    headers = ["case", "procs x thr", "ok", "429", "steady of quota", "expected", "calls/s", "of quota"]
    headers += ["max ok/win", "max tried/win", "drain s", "ideal s", "tokens"]
    table = [
        [
            r["label"],
            f"{r['workers']}x{r['threads']}",
            r["accepted"],
            r["rate_limited"],
            f"{r['steady_of_quota']:.1%}",
            f"{r['expected_steady_of_quota']:.1%}" if r["kind"] == "bridge" else "-",
            r["achieved_per_s"],
            f"{r['achieved_of_quota']:.1%}",
            r["max_accepted_in_window"],
            r["max_attempted_in_window"],
            round(r["drain_s"], 1),
            round(r["ideal_drain_s"], 1),
            r["token_requests"],
        ]
        for r in rows
    ]
    text = print_table(f"Quota utilisation -- quota {quota}, backlog {backlog} calls", headers, table, digits=3)
    if quota in left_out:
        print(f"not run at {quota}: {left_out[quota]}")
        text += f"\nnot run at {quota}: {left_out[quota]}"
    return text


def chart(tables: list[dict[str, Any]], path: Path) -> None:
    """Calls accepted in the trailing window over time, per case, against the quota line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = len(tables)
    nrows = max(len(t["rows"]) for t in tables)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 1.9 * nrows), squeeze=False, sharey="col")
    for col, table in enumerate(tables):
        rate = RateLimit.parse(table["quota"])
        for row, case in enumerate(table["rows"]):
            ax = axes[row][col]
            ok = [t for t, accepted in case["arrivals"] if accepted]
            refused = [t for t, accepted in case["arrivals"] if not accepted]
            end = max((t for t, _ in case["arrivals"]), default=0.0) + rate.window_s
            grid = [i * rate.window_s / 50 for i in range(int(end / (rate.window_s / 50)) + 1)]
            counts = [sum(1 for t in ok if g - rate.window_s < t <= g) for g in grid]
            ax.step(grid, counts, where="post", lw=1.2, label="accepted in trailing window")
            ax.axhline(rate.limit, color="red", ls="--", lw=1, label=f"quota {table['quota']}")
            if refused:
                ax.plot(refused, [rate.limit * 1.05] * len(refused), "rx", ms=4, label="429")
            title = f"{case['label']} (steady {case['steady_of_quota']:.1%} of quota, {case['rate_limited']} x 429)"
            ax.set_title(title, fontsize=9)
            ax.set_ylim(0, rate.limit * 1.25)
            ax.grid(alpha=0.3)
        axes[-1][col].set_xlabel("seconds since the first call")
        axes[0][col].legend(fontsize=7, loc="lower right")
    fig.suptitle("Calls accepted in the trailing quota window (= calls per second at 10/s)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
