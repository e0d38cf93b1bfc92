#!/usr/bin/env python3
"""bench/report.py: turn bench/run.sh's samples into the table, the JSON and the doc section.

    report.py --samples samples.jsonl --meta meta.json --json results/bench-DATE.json \
              [--doc docs/benchmarks.md]

Each figure's value is the median of its runs. Ratios are value / value of the reference
subject, whatever the direction: the "better" column says which way is good. A third table
gives the lowest and highest run of every figure measured more than once, because on a small
shared machine the spread is often wider than the gap between two subjects. The doc is
updated only between its two marker lines.
"""

import argparse
import json
import statistics
import sys

SUBJECTS = [
    ("kernel", "(1) no tunnel"),
    ("wggo", "(2) wg-go + socat"),
    ("rathole", "(3) rathole Noise"),
    ("pinhole", "(4) Pinhole userspace"),
    ("tun", "(5) Pinhole TUN"),
    ("tunnat", "(6) TUN + kernel_nat"),
]
REFERENCES = ["kernel", "wggo", "rathole"]

# key, label, unit, better (up/down), decimals
FIGURES = [
    ("tcp_1_up", "TCP 1 stream, client→home", "Mbit/s", "up", 0),
    ("tcp_1_down", "TCP 1 stream, home→client (-R)", "Mbit/s", "up", 0),
    ("tcp_4_up", "TCP 4 streams, client→home", "Mbit/s", "up", 0),
    ("tcp_4_down", "TCP 4 streams, home→client (-R)", "Mbit/s", "up", 0),
    ("rr_p50_us", "64 B request/response p50", "µs", "down", 0),
    ("rr_p99_us", "64 B request/response p99", "µs", "down", 0),
    ("rr_p50_one_core_us", "64 B request/response p50, chain on one core", "µs", "down", 0),
    ("rr_p50_polling_us", "64 B request/response p50, idle cores poll 200 µs", "µs", "down", 0),
    ("cps", "new forwarded connections", "conn/s", "up", 0),
    ("cpu_machine_per_conn_us", "CPU of the whole machine per new connection", "µs", "down", 0),
    ("udp_pps", "UDP forward, delivered", "packets/s", "up", 0),
    ("cpu_proc_per_gb", "CPU of relay+home processes", "CPU-s/GB", "down", 1),
    ("cpu_machine_per_gb", "CPU of the whole machine", "CPU-s/GB", "down", 1),
    ("relay_rest_mib", "relay RSS at rest", "MiB", "down", 1),
    ("home_rest_mib", "home RSS at rest", "MiB", "down", 1),
    ("relay_peak_mib", "relay peak RSS (VmHWM)", "MiB", "down", 1),
    ("home_peak_mib", "home peak RSS (VmHWM)", "MiB", "down", 1),
]


def idle_figures(counts):
    out = []
    for n in counts:
        out.append((f"idle_{n}_relay_mib", f"relay PSS, {n:,} idle conns", "MiB", "down", 1))
        out.append((f"idle_{n}_kib_per_conn", f"relay per idle conn, {n:,} conns", "KiB", "down", 1))
    return out


def load(samples_path):
    by = {}
    extra = {}
    for line in open(samples_path):
        line = line.strip()
        if not line:
            continue
        s = json.loads(line)
        key = (s["subject"], s["figure"])
        by.setdefault(key, []).append(s["value"])
        extra.setdefault(key, []).append({k: v for k, v in s.items() if k not in ("subject", "figure", "value")})
    return by, extra


def wake_note(machine):
    """What a wake-up on another core costs the machine, when the bench measured it."""
    one, all_ = machine.get("pingpong_one_core_p50_us"), machine.get("pingpong_all_cores_p50_us")
    if one is None or all_ is None:
        return ""
    poll = machine.get("pingpong_all_cores_polling_p50_us")
    polled = f", {poll:g} µs across cores that poll before they halt" if poll is not None else ""
    return (f"; two threads' UDP ping-pong {one:g} µs on one core, {all_:g} µs across cores{polled}"
            " (the latency figures pay the difference at each hand-over that crosses)")


def fmt(v, decimals):
    if v is None:
        return "–"
    if decimals == 0:
        return f"{v:,.0f}"
    return f"{v:,.{decimals}f}"


def fmt_ratio(r):
    if r is None:
        return "–"
    if r >= 10:
        return f"{r:.0f}×"
    if r >= 1:
        return f"{r:.2f}×"
    return f"{r:.3f}×" if r < 0.1 else f"{r:.2f}×"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--doc")
    a = ap.parse_args()

    meta = json.load(open(a.meta))
    by, extra = load(a.samples)
    figures = FIGURES + idle_figures(meta.get("idle_counts", []))
    active = meta["subjects"]
    notes = meta.get("notes", {})

    results = {}
    for key, label, unit, better, dec in figures:
        row = {"label": label, "unit": unit, "better": better, "subjects": {}}
        for s, _ in SUBJECTS:
            vals = by.get((s, key), [])
            good = [v for v in vals if v is not None]
            entry = {
                "median": statistics.median(good) if good else None,
                "samples": vals,
            }
            ex = extra.get((s, key), [])
            held = [e.get("held") for e in ex if "held" in e]
            if held:
                entry["held"] = held[0]
                entry["requested"] = ex[0].get("requested")
            errs = [e.get("errors") for e in ex if e.get("errors") is not None]
            if errs:
                entry["errors"] = errs
            sent = [e.get("sent_pps") for e in ex if e.get("sent_pps") is not None]
            if sent:
                entry["sent_pps"] = sent
            if s not in active:
                entry["note"] = notes.get(s, "not run")
            row["subjects"][s] = entry
        # ratios of every subject to each reference
        for s, _ in SUBJECTS:
            v = row["subjects"][s]["median"]
            ratios = {}
            for ref in REFERENCES:
                r = row["subjects"][ref]["median"]
                ratios[ref] = (v / r) if (v is not None and r not in (None, 0)) else None
            row["subjects"][s]["ratio_to"] = ratios
        results[key] = row

    out = {"meta": meta, "figures": results}
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1)

    table = render(results, figures, meta, notes, active)
    print(table)
    if a.doc:
        update_doc(a.doc, table)


def render(results, figures, meta, notes, active):
    def inactive_cell(s):
        note = notes.get(s, "")
        return "not yet implemented" if "not yet implemented" in note else "skipped"

    head = ["figure", "better"] + [name for _, name in SUBJECTS]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for key, label, unit, better, dec in figures:
        row = results[key]
        cells = [f"{label} ({unit})", "↑" if better == "up" else "↓"]
        for s, _ in SUBJECTS:
            e = row["subjects"][s]
            if s not in active:
                cells.append(inactive_cell(s))
                continue
            c = fmt(e["median"], dec)
            if e.get("held") is not None and e.get("requested") and e["held"] < e["requested"]:
                c += f" (held {e['held']:,})"
            cells.append(c)
        lines.append("| " + " | ".join(cells) + " |")

    # Ratios of Pinhole (userspace, TUN, TUN + kernel_nat) to the three references.
    pairs = [(t, r) for t in ("pinhole", "tun", "tunnat") for r in REFERENCES]
    num = {"kernel": "(1)", "wggo": "(2)", "rathole": "(3)", "pinhole": "(4)", "tun": "(5)", "tunnat": "(6)"}
    rhead = ["figure", "better"] + [f"{num[t]}÷{num[r]}" for t, r in pairs]
    rlines = ["| " + " | ".join(rhead) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * len(pairs)) + "|"]
    for key, label, unit, better, dec in figures:
        row = results[key]
        cells = [label, "↑" if better == "up" else "↓"]
        for t, r in pairs:
            cells.append(fmt_ratio(row["subjects"][t]["ratio_to"][r]) if t in active and r in active else "–")
        rlines.append("| " + " | ".join(cells) + " |")

    # Run-to-run spread of the figures measured in every run (memory is measured once).
    shead = ["figure"] + [name for _, name in SUBJECTS]
    slines = ["| " + " | ".join(shead) + " |", "|" + "|".join(["---"] + ["---:"] * len(SUBJECTS)) + "|"]
    for key, label, unit, better, dec in figures:
        row = results[key]
        spreads = {}
        for s, _ in SUBJECTS:
            good = [v for v in row["subjects"][s]["samples"] if v is not None]
            if s in active and len(good) > 1:
                spreads[s] = f"{fmt(min(good), dec)}–{fmt(max(good), dec)}"
        if spreads:
            slines.append("| " + " | ".join([f"{label} ({unit})"] + [spreads.get(s, "–") for s, _ in SUBJECTS]) + " |")

    foot = []
    runs = meta["runs"]
    amount = f"{meta['tcp_bytes']}B" if meta.get("tcp_bytes") else f"{meta['tcp_seconds']:g} s"
    foot.append(
        f"Median of {runs} run{'s' if runs != 1 else ''} ({meta['date']}, {meta['machine']['cpus']} cores, "
        f"kernel {meta['machine']['kernel']}{wake_note(meta['machine'])}; iperf3 {amount} per test, "
        f"{meta['rr_count']} round trips, connections for {meta['cps_seconds']:g} s with "
        f"{meta['cps_threads']} connectors, UDP {meta['udp_size']}-byte payloads for "
        f"{meta['udp_seconds']:g} s; memory figures from one run). Pinhole {meta['versions']['pinhole']}. "
        f"Bench took {meta['elapsed_seconds']:g} s."
    )
    for s, name in SUBJECTS:
        if s not in active and s in notes:
            foot.append(f"{name}: {notes[s]}.")
    if "tunnat" in active and not meta.get("tunnat_tcp", True):
        foot.append("(6) has no throughput or CPU-per-GB figures: six subjects' iperf3 tests would take the bench "
                    "past 5 minutes (BENCH_TUNNAT_TCP=1 adds them).")
    if "tunnat" in active and meta.get("idle_counts"):
        foot.append("(6) has no idle figures: its relay holds nothing per connection, which lives in "
                    "the kernel's conntrack table, out of any process's memory.")
    polled = results.get("rr_p50_polling_us", {}).get("subjects", {})
    if any(v.get("median") is not None for v in polled.values()):
        foot.append("\"Idle cores poll 200 µs\": the latency test again with the kernel's default idle "
                    "polling for a KVM guest (haltpoll's guest_halt_poll_ns=200000; this machine's image "
                    "sets 0, so an idle core halts at once), put back after each run.")
    if meta.get("smoke"):
        foot.append("SMOKE RUN: tiny durations, one run; the figures prove the harness works and mean nothing.")
    spread = ""
    if len(slines) > 2:
        spread = ("\n\nSpread: the lowest and the highest of the runs behind each median:\n\n"
                  + "\n".join(slines))
    return ("\n".join(lines) + "\n\nRatios (a value divided by the reference's; ↑/↓ says which way is better):\n\n"
            + "\n".join(rlines) + spread + "\n\n" + "\n".join(foot) + "\n")


START = "<!-- bench:table:start (written by bench/report.py; do not edit by hand) -->"
END = "<!-- bench:table:end -->"


def update_doc(path, table):
    try:
        text = open(path).read()
    except FileNotFoundError:
        print(f"report.py: {path} not found; table not written there", file=sys.stderr)
        return
    if START not in text or END not in text:
        print(f"report.py: {path} has no table markers; table not written there", file=sys.stderr)
        return
    before = text.split(START)[0]
    after = text.split(END, 1)[1]
    with open(path, "w") as f:
        f.write(before + START + "\n\n" + table + "\n" + END + after)


if __name__ == "__main__":
    main()
