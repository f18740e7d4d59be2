#!/usr/bin/env python3
"""Turns the JSON lines the benchmark programs printed into the report of
scripts/bench.sh: a Markdown table on stdout and a JSON file.

    report.py --lines RESULTS.jsonl --meta META.json --out bench/results.json

Every speed is shown with the baseline measured in the same run and the ratio
to it; every target of the benchmark issue is printed next to its figure
(targets are not asserted: this prints "yes" / "NO" / "-").
"""
import argparse
import json
import statistics
import sys


def pct(sorted_values, p):
    """Nearest-rank percentile of sorted values."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), int(-(-p * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def fmt(value, unit="", digits=None):
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if digits is None:
        digits = 0 if abs(value) >= 100 else (1 if abs(value) >= 10 else 2)
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".strip()


def ratio(value, base):
    if value is None or base in (None, 0):
        return None
    return value / base


class Report:
    def __init__(self):
        self.rows = []

    def row(self, section, figure, value, unit="", baseline=None, base_label="", rat=None, target="", met=None,
            digits=None, note=""):
        self.rows.append({
            "section": section, "figure": figure, "value": value, "unit": unit,
            "baseline": baseline, "baseline_label": base_label, "ratio": rat,
            "target": target, "target_met": met, "note": note, "digits": digits,
        })

    def markdown(self):
        out = ["| Benchmark | Figure | Value | Baseline (same run) | Ratio | Target | Met |",
               "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            value = fmt(r["value"], r["unit"], r["digits"])
            if r["note"]:
                value = f"{value} ({r['note']})"
            base = ""
            if r["baseline"] is not None:
                base = f"{fmt(r['baseline'], r['unit'], r['digits'])} {r['baseline_label']}".strip()
            elif r["baseline_label"]:
                base = r["baseline_label"]
            rat = f"{r['ratio']:.2f}×" if r["ratio"] is not None else ""
            met = {True: "yes", False: "**NO**", None: "-" if r["target"] else ""}[r["target_met"]]
            out.append(f"| {r['section']} | {r['figure']} | {value} | {base} | {rat} | {r['target']} | {met} |")
        return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(args.meta) as f:
        meta = json.load(f)
    entries = []
    with open(args.lines) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError:
                    print(f"report.py: skipped a malformed line: {line[:80]}", file=sys.stderr)
    rep = Report()
    summary = {}

    # 1. Relay latency: pooled samples of every chunk, per implementation.
    relay = {}
    for e in entries:
        if e.get("bench") == "relay":
            relay.setdefault(e["impl"], []).extend(e.get("samples_us", []))
    relay_summary = {}
    for impl, samples in relay.items():
        s = sorted(samples)
        relay_summary[impl] = {"rounds": len(s), "p50_us": pct(s, 50), "p90_us": pct(s, 90), "p99_us": pct(s, 99),
                               "min_us": s[0] if s else None, "mean_us": statistics.fmean(s) if s else None}
    summary["relay_latency"] = relay_summary
    floor = relay_summary.get("raw-ws", {})
    names = {"raw-ws": "bare WebSocket pair (floor)", "c-abi": "our C client (C ABI)",
             "rust-api": "our Rust API", "js-sdk": "official JS SDK (Node)"}
    for impl in ["raw-ws", "c-abi", "rust-api", "js-sdk"]:
        r = relay_summary.get(impl)
        label = names[impl]
        if r is None:
            rep.row("1 relay offer→answer", f"{label} p50", None, note=meta.get("skipped", {}).get(impl, "not run"))
            continue
        ours = impl in ("c-abi", "rust-api")
        for q in ("p50", "p99"):
            value = r[f"{q}_us"]
            base = floor.get(f"{q}_us")
            rat = ratio(value, base) if impl != "raw-ws" else None
            target, met = "", None
            if ours and q == "p50":
                target, met = "≤ 2× floor", (rat is not None and rat <= 2.0)
            rep.row("1 relay offer→answer", f"{label} {q} ({r['rounds']} rounds)", value, "µs",
                    base if impl != "raw-ws" else None, "floor" if impl != "raw-ws" else "", rat, target, met)

    # 2. Throughput: median over repetitions.
    tput = {}
    for e in entries:
        if e.get("bench") == "throughput":
            tput.setdefault(e["impl"], []).append(e)
    tput_summary = {impl: {"runs": len(v), "messages": v[0]["messages"],
                           "per_second_median": statistics.median(x["per_second"] for x in v),
                           "per_second_all": [x["per_second"] for x in v]} for impl, v in tput.items()}
    summary["throughput"] = tput_summary
    base = tput_summary.get("raw-ws", {}).get("per_second_median")
    for impl, label in [("raw-ws", "bare WebSocket pair (baseline)"), ("c-abi", "our C client (C ABI)"),
                        ("rust-api", "our Rust API")]:
        t = tput_summary.get(impl)
        if t is None:
            rep.row("2 throughput, quotas off", label, None, note="not run")
            continue
        value = t["per_second_median"]
        target, met = ("≥ 20,000 msg/s", value >= 20000) if impl == "c-abi" else ("", None)
        rep.row("2 throughput, quotas off", f"{label}, {t['messages']:,} ICE msgs × {t['runs']}", value, "msg/s",
                base if impl != "raw-ws" else None, "baseline" if impl != "raw-ws" else "",
                ratio(value, base) if impl != "raw-ws" else None, target, met)

    # 3. Connect.
    connect = next((e for e in entries if e.get("bench") == "connect" and "paths" in e), None)
    if connect is None:
        rep.row("3 connect", "all paths", None, note=meta.get("skipped", {}).get("connect", "not run"))
    else:
        paths = {p["path"]: p for p in connect["paths"]}
        summary["connect"] = paths
        for p in connect["paths"]:
            base = paths.get(p["baseline"])
            is_base = p["baseline"] == p["path"]
            rt = p.get("round_trips")
            rt_text = "" if rt is None else f"{rt} RTT" + (
                f", {p['round_trips_total']} incl. parallel ICE" if p.get("round_trips_total") not in (None, rt) else "")
            figure = f"{p['path']}: {p['what']}"
            rep.row("3 connect (median)", figure, p["median_ms"], "ms",
                    None if is_base else base["median_ms"], "" if is_base else p["baseline"],
                    None if is_base else ratio(p["median_ms"], base["median_ms"]), "", None, digits=3, note=rt_text)

    # 4. Footprint.
    fp = meta.get("footprint", {})
    so = fp.get("so_stripped_bytes")
    rep.row("4 footprint", ".so stripped, default features (rustls)", so / 1e6 if so else None, "MB", target="≤ 2.5 MB",
            met=(so is not None and so <= 2.5e6), digits=2)
    native = fp.get("native_tls")
    if native:
        rep.row("4 footprint", ".so stripped, native-tls variant (`--no-default-features --features native-tls`)",
                native / 1e6, "MB", target="≤ 2.5 MB", met=native <= 2.5e6, digits=2,
                note="the system's libssl and libcrypto are not counted")
    else:
        rep.row("4 footprint", ".so stripped, native-tls variant", "n/a", target="≤ 2.5 MB",
                note=meta.get("skipped", {}).get("native-tls") or "not built")
    for target, size in sorted((fp.get("cross") or {}).items()):
        rep.row("4 footprint", f".so stripped, firmware build (rustls, no emulator) for {target}", int(size) / 1e6, "MB",
                target="≤ 2.5 MB", met=int(size) <= 2.5e6, digits=2)
    clients = next((e for e in entries if e.get("bench") == "footprint" and e.get("mode") == "clients"), None)
    if clients:
        before = clients["rss_kb_before"]
        steps = {s["clients"]: s for s in clients["steps"]}
        one = steps.get(1)
        summary["footprint_clients"] = clients
        if one:
            added = one["rss_kb"] - before
            anon = one.get("anon_kb", 0) - clients.get("anon_kb_before", 0)
            file_backed = one.get("file_kb", 0) - clients.get("file_kb_before", 0)
            rep.row("4 footprint", "RSS added by the library, 1 idle connected client", added, "KB",
                    target="≤ 1024 KB", met=added <= 1024,
                    note=f"anonymous {anon:,} KB + file-backed {file_backed:,} KB (library code and read-only "
                         f"data, shared and clean); dlopen alone {clients['rss_kb_loaded'] - before:,} KB")
            for n in sorted(steps):
                if n == 1:
                    continue
                per = (steps[n]["rss_kb"] - one["rss_kb"]) / (n - 1)
                per_anon = (steps[n].get("anon_kb", 0) - one.get("anon_kb", 0)) / (n - 1)
                rep.row("4 footprint", f"RSS per additional client, {n} clients", per, "KB",
                        target="≤ 64 KB", met=per <= 64,
                        note=f"anonymous {per_anon:,.1f} KB; total added {steps[n]['rss_kb'] - before:,} KB")
            for n in sorted(steps):
                lib_threads = steps[n]["threads"] - clients["threads_before"]
                rep.row("4 footprint", f"threads started by the library, {n} client(s)", lib_threads, "",
                        target="≤ 2", met=lib_threads <= 2, digits=0)
    else:
        rep.row("4 footprint", "RSS / threads with N clients", None, note="not run")
    for e in entries:
        if e.get("bench") == "footprint" and e.get("mode") == "queue":
            rep.row("4 footprint", f"RSS per queued {e['kind'].upper()} message ({e['payload_bytes']} B text, "
                    f"{e['messages']:,} queued)", e["bytes_per_message"], "B", digits=0)
            summary.setdefault("footprint_queue", []).append(e)

    # 5. Scale.
    scale = {e["server"]: e for e in entries if e.get("bench") == "scale"}
    summary["scale"] = scale
    emu, basel = scale.get("emulator"), scale.get("baseline")
    if emu:
        rep.row("5 emulator scale", "sockets held at once (1 master + 9 viewers per channel)", emu["sockets_held"], "",
                basel["sockets_held"] if basel else None, "bare relay" if basel else "", None,
                "10,000", emu["sockets_held"] >= 10000, digits=0,
                note=f"of {emu['sockets_target']:,} tried, {emu['connect_errors']} errors")
        for key, label, unit, digits in [
            ("messages_per_second", "messages relayed/s with all sockets held (closed loop)", "msg/s", 0),
            ("connects_per_second", "connects/s while ramping up (64 in flight)", "conn/s", 0),
        ]:
            b = basel.get(key) if basel else None
            rep.row("5 emulator scale", label, emu[key], unit, b, "bare relay" if basel else "", ratio(emu[key], b),
                    digits=digits)
        b = basel.get("server_kb_per_connection") if basel else None
        rep.row("5 emulator scale", "server RSS per connection", emu["server_kb_per_connection"], "KB", b,
                "bare relay" if basel else "", ratio(emu["server_kb_per_connection"], b),
                note=f"{emu['server_rss_kb_held'] / 1024:,.0f} MB for {emu['sockets_held']:,}")
    else:
        rep.row("5 emulator scale", "sockets held", None, note=meta.get("skipped", {}).get("scale", "not run"))

    table = rep.markdown()
    header = (f"kvs-signaling benchmarks ({meta.get('mode')}), commit {meta.get('commit', '?')[:12]}"
              f"{' (dirty tree)' if meta.get('dirty') else ''}, {meta.get('cores')} cores, {meta.get('cpu_model')}")
    print(f"### {header}\n")
    print(table)
    notes = meta.get("notes", [])
    if notes:
        print()
        for n in notes:
            print(f"* {n}")
    result = {"meta": meta, "summary": summary, "rows": rep.rows, "raw": entries, "markdown": table}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
