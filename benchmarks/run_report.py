"""Ratios, the markdown table and the throughput plot of ``benchmarks.bench_run``."""

from __future__ import annotations

import math

from benchmarks.run_contenders import CONTENDERS, WORKERS, BestSerial


def _kind(name: str) -> str:
    return CONTENDERS[name].kind


def _display(name: str) -> str:
    """The contender's name as the tables show it: chunkmap's in bold."""
    return f"**{name}**" if _kind(name) == "chunkmap" else name


def add_ratios(report: dict) -> None:
    """Add throughput, ratios, efficiency and memory ratios to every row, in place.

    - ``x_serial``: wall time of the best plain serial loop / this wall time (> 1: faster);
    - ``x_best_peer``: wall time of the fastest non-chunkmap contender (serial loops and the
      seed's recipe included) / this wall time;
    - ``efficiency``: ideal ``calls * cost / P`` (P = 2 workers) / wall time, for cost >= 100 us;
    - ``x_limit`` / ``x_limit_warm``: the workload's limit on P cores (``limit_s``: the compiled
      loop's time per call, measured in the same run, x calls / P; ``climit_s``, the C loop's, for
      the cfunc contender) / the cold / warm wall time (1.0 is the limit).
    """
    for c in report["costs"]:
        rows = [r for r in c["rows"] if r["status"] == "ok" and r.get("agrees")]
        walls = {r["contender"]: r["wall_cold"] for r in rows}
        serial = walls.get(BestSerial.name)
        peers = {k: v for k, v in walls.items() if _kind(k) != "chunkmap"}
        best_peer = min(peers, key=peers.get) if peers else None
        c["best_peer"] = best_peer
        c["ideal_s"] = c["calls"] * c["cost_ns"] * 1e-9 / WORKERS if c["cost_ns"] else None
        for r in c["rows"]:
            wall = r.get("wall_cold")
            if wall is None or r["status"] != "ok":
                continue
            r["throughput"] = c["elements"] / wall
            r["x_serial"] = serial / wall if serial else None
            r["x_best_peer"] = peers[best_peer] / wall if best_peer else None
            r["efficiency"] = c["ideal_s"] / wall if c["cost_ns"] >= 100_000 else None
            limit = c.get("climit_s" if r["contender"] == "chunkmap cfunc" else "limit_s")
            r["x_limit"] = limit / wall if limit else None
            r["x_limit_warm"] = limit / r["wall_warm"] if limit and r.get("wall_warm") else None
            if "mem_peak_MB" in r:
                r["mem_peak_vs_io"] = r["mem_peak_MB"] / (c["inputs_MB"] + c["outputs_MB"])


def _f(x, fmt: str, none: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return none
    return format(x, fmt)


def _cost(ns: int) -> str:
    if ns == 0:
        return "0"
    if ns < 1000:
        return f"{ns} ns"
    if ns < 1_000_000:
        return f"{ns / 1000:g} us"
    return f"{ns / 1e6:g} ms"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"chunkmap.run against its peers -- {report['mode']} mode"
        + (" (memory scenario)" if report["memory_scenario"] else "")
        + f", {report['date']}, {m['cpu']} ({m['cores']} cores), {WORKERS} workers; "
        f"load average {report['load_start'][0]:.2f} at start, {report['load_end'][0]:.2f} at end; "
        f"chunkmap at {report.get('git', '?')}",
        "",
    ]
    if report["memory_scenario"]:
        return "\n".join(lines + _memory_table(report))
    for c in report["costs"]:
        ideal = f", ideal N*t/P {c['ideal_s']:.3f} s" if c["ideal_s"] else ""
        if c.get("limit_s"):
            ideal += (f"; limit {c['limit_s']:.3f} s (compiled loop {c['limit_ns_per_call']:.1f} ns/call x calls "
                      f"/ {WORKERS}), for cfunc {c['climit_s']:.3f} s (C loop {c['climit_ns_per_call']:.1f} ns/call)")
        lines += [
            f"**cost {_cost(c['cost_ns'])}** -- n={c['n']} ({c['elements']:,} elements, "
            f"{c['calls']:,} calls, {c['computed']:,} computed; inputs {c['inputs_MB']:.0f} MB, "
            f"outputs {c['outputs_MB']:.0f} MB){ideal}; best peer: {c['best_peer']}",
            "",
            "| contender | wall cold | wall warm | elements/s | x best serial | x best peer "
            "| efficiency | limit / wall, cold / warm | peak mem - baseline | agrees |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in c["rows"]:
            name = _display(r["contender"])
            if r["status"] != "ok":
                lines.append(f"| {name} | {r['status']} | | | | | | | "
                             f"{_f(r.get('mem_peak_delta_MB'), '.0f')} MB | |")
                continue
            lines.append(
                f"| {name} | {r['wall_cold']:.3f} s | {_f(r.get('wall_warm'), '.3f', '-')}"
                f"{' s' if r.get('wall_warm') is not None else ''} | {r['throughput']:.3g} "
                f"| {_f(r['x_serial'], '.2f')} | {_f(r['x_best_peer'], '.2f')} "
                f"| {_f(r['efficiency'] and 100 * r['efficiency'], '.1f')}{'%' if r['efficiency'] else ''} "
                f"| {_f(r.get('x_limit') and 100 * r['x_limit'], '.0f')}% / "
                f"{_f(r.get('x_limit_warm') and 100 * r['x_limit_warm'], '.0f', '-')}% "
                f"| {_f(r.get('mem_peak_delta_MB'), '.0f')} MB | {'yes' if r['agrees'] else 'NO'} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(report: dict, path: str) -> None:
    """Throughput (elements/s) vs per-call cost, one line per contender, log-log.

    Cost 0 cannot sit on a log axis: it is drawn at 10 ns and labelled "0".
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zero_at = 10.0
    costs = sorted(report["costs"], key=lambda c: c["cost_ns"])
    xs_of = lambda c: c["cost_ns"] if c["cost_ns"] > 0 else zero_at  # noqa: E731
    fig, ax = plt.subplots(figsize=(10, 5.5))
    styles = {"serial": ":", "peer": "-", "chunkmap": "-"}
    colors = dict(zip(CONTENDERS, [
        "#7f7f7f", "#000000", "#8c564b", "#d62728", "#9467bd", "#ff7f0e", "#bcbd22",
        "#e377c2", "#17becf", "#1f77b4", "#2ca02c", "#006400",
    ]))
    for name in CONTENDERS:
        pts = [(xs_of(c), r["throughput"]) for c in costs for r in c["rows"]
               if r["contender"] == name and r.get("throughput")]
        if not pts:
            continue
        kind = _kind(name)
        ax.plot(*zip(*pts), styles[kind], marker="o", label=name, color=colors[name],
                linewidth=2.8 if kind == "chunkmap" else 1.3, markersize=5)
    ideal = [(xs_of(c), c["elements"] / c["ideal_s"]) for c in costs if c["ideal_s"]]
    if ideal:
        ax.plot(*zip(*ideal), "k--", marker="_", markersize=14, linewidth=1,
                label=f"ideal N*t/{WORKERS} (cost only)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [xs_of(c) for c in costs]
    ax.set_xticks(ticks)
    ax.set_xticklabels([_cost(c["cost_ns"]) for c in costs])
    ax.minorticks_off()
    ax.set_xlabel("per-call cost of slow_computation (busy-wait)")
    ax.set_ylabel("throughput (elements/s, masked included)")
    m = report["machine"]
    ax.set_title(f"chunkmap.run vs peers, {report['mode']} mode, {m['cores']} cores "
                 f"(load {report['load_start'][0]:.1f}; provisional)", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _memory_table(report: dict) -> list[str]:
    c = report["costs"][0]
    io = c["inputs_MB"] + c["outputs_MB"]
    lines = [
        f"**memory scenario, cost {_cost(c['cost_ns'])}** -- n={c['n']} ({c['elements']:,} elements; "
        f"inputs {c['inputs_MB']:.0f} MB + outputs {c['outputs_MB']:.0f} MB = {io:.0f} MB)",
        "",
        "| contender | wall | peak total, all processes | peak - baseline (inputs loaded) "
        "| peak total / (inputs + outputs) | agrees |",
        "|---|---|---|---|---|---|",
    ]
    for r in c["rows"]:
        name = _display(r["contender"])
        wall = f"{r['wall_cold']:.1f} s" if r["status"] == "ok" else r["status"]
        agrees = {True: "yes", False: "NO"}[bool(r.get("agrees"))] if r["status"] == "ok" else ""
        lines.append(
            f"| {name} | {wall} | {_f(r.get('mem_peak_MB'), '.0f')} MB "
            f"| {_f(r.get('mem_peak_delta_MB'), '.0f')} MB | {_f(r.get('mem_peak_vs_io'), '.2f')} "
            f"| {agrees} |"
        )
    return lines + [""]
