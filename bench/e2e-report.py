#!/usr/bin/env python3
"""Turn the results of bench/vm/e2e-guest.sh into the markdown tables of
docs/performance.md.

    bench/e2e-report.py <results dir> [--check]

Reads <dir>/samples.tsv (one line per fio run), the fio JSON files it names
and <dir>/meta.txt. Prints markdown on stdout. Exit status 1 (with the
reasons on stderr) when a figure is missing for either target: a fio run
failed, its JSON has an error or no I/O, or a case ran for one target only.
With --check the figures must also be positive (latency, IOPS, MiB/s and
guest CPU time) and no run may have made the initiator reconnect or fail a
work request (the smoke test uses this). Timings themselves are never
checked.

A run of `bench/e2e.sh --scrape HZ` (meta.txt has scrape_hz; targets
"srptd" and "srptd-scraped", no kernel) gets the scrape comparison instead
of the srptd / kernel tables: the same figures for srptd plain and scraped,
and the scrapes achieved (<dir>/scrapes.tsv). A scraped run without a valid
scrape in its measurement window counts as a missing figure.
"""

import json
import math
import os
import re
import statistics
import sys

TARGETS = ("srptd", "kernel")
SCRAPE_TARGETS = ("srptd", "srptd-scraped")
BACKSTORES = {
    "ram": "srptd `ram:`, kernel LIO `rd_mcp`",
    "block": "srptd `file:/dev/nullb0`, kernel LIO `iblock` on the same null_blk",
    "file": "srptd `file:` on ext4, kernel LIO `fileio` (fd_buffered_io=1) on the same file",
    "rbd": "srptd `rbd:` (librbd), kernel LIO `iblock` on the same image mapped by krbd; Ceph: one monitor, one memstore OSD on 127.0.0.1",
}


def fail(msg):
    print(f"e2e-report: {msg}", file=sys.stderr)
    sys.exit(2)


def read_tsv(d, name):
    """<d>/<name>, a TSV file with a header line: (path, rows as dicts),
    rows None when the file holds no line at all."""
    path = os.path.join(d, name)
    try:
        with open(path) as f:
            lines = [l.rstrip("\n").split("\t") for l in f if l.strip()]
    except OSError as e:
        fail(f"cannot read {path}: {e}")
    if not lines:
        return path, None
    head = lines[0]
    return path, [dict(zip(head, r)) for r in lines[1:]]


def read_samples(d):
    path, rows = read_tsv(d, "samples.tsv")
    if rows is None:
        fail(f"{path} is empty")
    return rows


def read_meta(d):
    meta = {}
    for name in ("meta.txt", "host.txt"):
        try:
            with open(os.path.join(d, name)) as f:
                for line in f:
                    k, _, v = line.rstrip("\n").partition(" ")
                    meta[k] = v
        except OSError:
            pass
    return meta


def case_kind(case):
    """'lat' for QD1 4 KiB cases, 'iops' for other 4 KiB cases, 'bw' else."""
    parts = case.split("-")
    bs = parts[1] if len(parts) > 1 else ""
    qd = parts[2] if len(parts) > 2 else ""
    if bs == "4k":
        return "lat" if qd == "qd1" else "iops"
    return "bw"


# Every row also shows p50 and the maximum completion latency: a stall
# (the initiator timing out and reconnecting) shows in the maximum long
# before it moves a median.
TAIL = [("lat_p50", "p50 latency µs ↓"), ("lat_max_ms", "max latency ms ↓")]
METRICS = {
    "lat": [
        ("lat_mean", "mean latency µs ↓"),
        ("lat_p50", "p50 latency µs ↓"),
        ("lat_p99", "p99 latency µs ↓"),
        ("lat_max_ms", "max latency ms ↓"),
    ],
    "iops": [("iops", "IOPS ↑")] + TAIL,
    "bw": [("mib_s", "MiB/s ↑")] + TAIL,
}


def fio_figures(d, s, errors):
    """The fio figures of one sample, or None (reason appended to errors)."""
    where = f"{s['target']} {s['case']} numjobs={s['numjobs']} round {s['round']}"
    if s["status"] != "ok":
        errors.append(f"{where}: {s['status']}")
        return None
    try:
        with open(os.path.join(d, s["json"])) as f:
            j = json.load(f)
        job = j["jobs"][0]
    except (OSError, ValueError, KeyError, IndexError) as e:
        errors.append(f"{where}: no usable fio JSON ({e})")
        return None
    if job.get("error"):
        errors.append(f"{where}: fio error {job['error']}")
        return None
    dirn = "write" if "write" in s["case"] else "read"
    r = job[dirn]
    if not r.get("total_ios"):
        errors.append(f"{where}: no {dirn} I/O done")
        return None
    pct = r.get("lat_ns", {}).get("percentile", {})

    def p(q):
        for k, v in pct.items():
            if math.isclose(float(k), q):
                return v / 1000.0
        return None

    return {
        "iops": r["iops"],
        "mib_s": r["bw_bytes"] / 2**20,
        "lat_mean": r["lat_ns"]["mean"] / 1000.0,
        "lat_p50": p(50.0),
        "lat_p99": p(99.0),
        "lat_max_ms": r["lat_ns"]["max"] / 1e6,
    }


def block_size(case):
    """Bytes per fio I/O from a section name like randread-4k-qd1."""
    m = re.match(r"^[a-z]+-(\d+)([km])-", case)
    if not m:
        fail(f"case {case}: cannot tell the block size from the name")
    return int(m.group(1)) << (10 if m.group(2) == "k" else 20)


def cpu_figures(s, warnings):
    """CPU per fio I/O (µs) and guest busy share of one sample, over the
    run's measurement window. The I/Os are the bytes the disk moved in the
    window over the block size (the block layer may split an I/O)."""
    where = f"{s['target']} {s['case']} numjobs={s['numjobs']} round {s['round']}"
    if s["window_ok"] != "1":
        warnings.append(f"{where}: no steady-state window (I/O did not go on for a second "
                        "snapshot after the first I/O); CPU figures not used")
        return None
    ios = int(s["bytes"]) / block_size(s["case"])
    clk = int(s["clk_tck"])
    if ios <= 0:
        warnings.append(f"{where}: no I/O in the CPU window")
        return None
    # The measuring shell's own snapshots are not I/O cost.
    self_ticks = int(s.get("self_ticks", 0))
    busy = sum(int(s[k]) for k in ("user", "nice", "system", "irq", "softirq", "steal"))
    total = busy + int(s["idle"]) + int(s["iowait"])
    busy = max(busy - self_ticks, 0)

    def us(ticks):
        return ticks / clk / ios * 1e6

    return {
        "guest_us": us(busy),
        "guest_busy_pct": 100.0 * busy / total if total else None,
        "softirq_us": us(int(s["softirq"])),
        "kthread_us": us(int(s["kthread_ticks"])),
        "proc_us": us(int(s["proc_ticks"])) if s["proc_ticks"] != "-" else None,
    }


def read_scrapes(d):
    """scrapes.tsv of a --scrape run: (case, numjobs, round) -> row."""
    _, rows = read_tsv(d, "scrapes.tsv")
    return {(r["case"], int(r["numjobs"]), r["round"]): r for r in rows or []}


def fmt(x):
    if x is None:
        return "n/a"
    a = abs(x)
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def summary(vals):
    """'median (min–max)' of the non-missing values; (text, median)."""
    v = [x for x in vals if x is not None]
    if not v:
        return "n/a", None
    m = statistics.median(v)
    if len(v) == 1:
        return fmt(m), m
    return f"{fmt(m)} ({fmt(min(v))}–{fmt(max(v))})", m


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}"


def scrape_report(d, meta, order, perf, cpu, samples, w, errors, warnings):
    """The tables of a --scrape run: srptd plain against srptd scraped."""
    hz = meta.get("scrape_hz", "?")
    scrapes = read_scrapes(d)
    plain, scraped = SCRAPE_TARGETS
    # CPU of the scraper (its loop and curls) per fio I/O, over the window,
    # and the guest CPU less that, for each scraped sample
    extra = {}
    for s in samples:
        key, t = (s["case"], int(s["numjobs"])), s["target"]
        if t not in SCRAPE_TARGETS:
            continue
        # cpu[(key, t)] holds this target's samples of the case in order
        g = cpu.get((key, t), [])[len(extra.get((key, t), []))]
        c = None
        if t == plain:
            c = {"scraper_us": 0.0, "guest_less_us": g["guest_us"]} if g else None
        else:
            r = scrapes.get((s["case"], int(s["numjobs"]), s["round"]))
            if r is None:
                errors.append(f"{scraped} {s['case']} numjobs={s['numjobs']} round {s['round']}: "
                              "no line in scrapes.tsv")
            elif g is not None and r["scraper_ticks_window"] != "-":
                ios = int(s["bytes"]) / block_size(s["case"])
                su = int(r["scraper_ticks_window"]) / int(r["clk_tck"]) / ios * 1e6
                c = {"scraper_us": su, "guest_less_us": g["guest_us"] - su}
        extra.setdefault((key, t), []).append(c)

    w("")
    w(f"**Metrics scrape: srptd plain against srptd scraped at {hz}/s.** srptd "
      "runs with `--metrics 127.0.0.1:9469` in both columns; in the scraped "
      "runs `bench/vm/scrape-loop.py` in the guest GETs `/metrics` "
      f"{hz} times a second, from before fio starts (it has made its first "
      "scrape) until fio has exited, one connection per scrape as Prometheus "
      "does. Each round starts one "
      "srptd and runs every case plain and scraped back to back, plain first "
      "in odd rounds and scraped first in even ones. The kernel target is not "
      "run in this mode. CPU per fio I/O (µs) is over each run's steady-state "
      "window, as in the main benchmark; the scraper's own CPU time (which a "
      "real Prometheus server would spend on another machine) is in *guest "
      "CPU* and taken out again in *guest CPU less the scraper*.")
    w("")
    w("↑ higher is better, ↓ lower is better; the ratio is scraped / plain.")
    w("")
    w(f"| case | jobs | figure | srptd | srptd, scraped at {hz}/s | scraped / plain |")
    w("|---|---|---|---|---|---|")
    for key in order:
        case, nj = key
        main = ("mib_s", "MiB/s ↑") if case_kind(case) == "bw" else ("iops", "IOPS ↑")
        rows = [(perf, m, label) for m, label in [main] + TAIL]
        rows += [(cpu, "guest_us", "guest CPU µs per I/O ↓"),
                 (extra, "guest_less_us", "guest CPU less the scraper, µs per I/O ↓"),
                 (cpu, "proc_us", "srptd process CPU µs per I/O ↓")]
        for src, metric, label in rows:
            cells, meds = [], []
            for t in SCRAPE_TARGETS:
                text, m = summary([f[metric] if f else None for f in src.get((key, t), [])])
                cells.append(text)
                meds.append(m)
            w(f"| {case} | {nj} | {label} | {cells[0]} | {cells[1]} | {ratio(meds[1], meds[0])} |")

    w("")
    w(f"Scrapes in the scraped runs (requested: {hz}/s). *Valid* is HTTP 200 with "
      "an exposition that has a `srptd_target_commands_total` sample; the "
      "achieved rate is valid scrapes in the measurement window over its "
      "length (median and min–max of the runs); *failed* counts the other "
      "answers (errors, timeouts after 5 s, invalid bodies) in the window / "
      "over the whole run. Scrape time is from connect to the end of the "
      "answer: the mean and the maximum in each window, median and min–max "
      "of the runs.")
    w("")
    w("| case | jobs | valid scrapes in windows | achieved /s | failed, window / run "
      "| scrape time ms, mean | scrape time ms, max | scraper CPU µs per I/O |")
    w("|---|---|---|---|---|---|---|---|")
    total_ok = total_bad = total_run = total_run_bad = 0
    total_s = 0.0
    for key in order:
        case, nj = key
        rows = [r for (c, j, _), r in sorted(scrapes.items()) if (c, j) == key]
        ok = sum(int(r["ok_window"]) for r in rows)
        bad = sum(int(r["bad_window"]) for r in rows)
        run_bad = sum(int(r["bad"]) for r in rows)
        total_ok += ok
        total_bad += bad
        total_run += sum(int(r["scrapes"]) for r in rows)
        total_run_bad += run_bad
        total_s += sum(float(r["window_s"]) for r in rows)
        rates = []
        for r in rows:
            ws = float(r["window_s"])
            rates.append(int(r["ok_window"]) / ws if r["window_ok"] == "1" and ws > 0 else None)
            if int(r["ok_window"]) == 0:
                errors.append(f"{scraped} {case} numjobs={nj} round {r['round']}: "
                              "no valid scrape in the measurement window")
            if int(r["bad"]):
                warnings.append(f"{scraped} {case} numjobs={nj} round {r['round']}: "
                                f"{r['bad']} of {r['scrapes']} scrapes failed or were invalid")
        su = summary([e["scraper_us"] if e else None for e in extra.get((key, scraped), [])])[0]

        def ms(col):
            return summary([float(r[col]) if r.get(col) and int(r["scrapes_window"]) else None
                            for r in rows])[0]
        rate_text, rate_med = summary(rates)
        try:
            if rate_med is not None and rate_med < 0.8 * float(hz):
                warnings.append(f"{scraped} {case} numjobs={nj}: {rate_med:.1f} valid scrapes/s "
                                f"achieved, under 80 % of the {hz}/s requested")
        except ValueError:
            pass
        w(f"| {case} | {nj} | {ok} | {rate_text} | {bad} / {run_bad} "
          f"| {ms('scrape_ms_mean')} | {ms('scrape_ms_max')} | {su} |")
    rate = f"{total_ok / total_s:.1f}/s" if total_s > 0 else "n/a"
    w("")
    w(f"Scrapes in all: {total_ok} valid in the measurement windows ({rate} "
      f"against {hz}/s requested), {total_bad} failed or invalid there; "
      f"{total_run} made over the whole scraped runs, {total_run_bad} of them "
      "failed or invalid.")
    print(f"e2e-report: scrapes: {total_ok} valid in the measurement windows ({rate}, "
          f"requested {hz}/s), {total_bad} failed or invalid; {total_run} in all, "
          f"{total_run_bad} failed or invalid", file=sys.stderr)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    check = "--check" in sys.argv[1:]
    if len(args) != 1:
        fail("usage: e2e-report.py <results dir> [--check]")
    d = args[0]
    samples = read_samples(d)
    meta = read_meta(d)
    errors = []
    warnings = []

    # (case, numjobs) in the order they ran; per target: lists of figures
    order = []
    perf = {}
    cpu = {}
    trouble = {}  # (key, target) -> [initiator reconnects, failed work requests]
    for s in samples:
        key = (s["case"], int(s["numjobs"]))
        if key not in order:
            order.append(key)
        f = fio_figures(d, s, errors)
        perf.setdefault((key, s["target"]), []).append(f)
        c = cpu_figures(s, warnings) if f is not None else None
        cpu.setdefault((key, s["target"]), []).append(c)
        t = trouble.setdefault((key, s["target"]), [0, 0])
        t[0] += int(s.get("reconnects") or 0)
        t[1] += int(s.get("qp_errors") or 0)
    scrape = "scrape_hz" in meta or any(s["target"] == SCRAPE_TARGETS[1] for s in samples)
    targets = SCRAPE_TARGETS if scrape else TARGETS
    for key in order:
        for t in targets:
            if not any(perf.get((key, t), [])):
                errors.append(f"{key[0]} numjobs={key[1]}: no result for {t}")

    out = []
    w = out.append
    w(f"Runs per figure: {meta.get('runs', '?')} (median, min–max in brackets), "
      f"{meta.get('runtime_s', '?')} s per fio job, LUN {meta.get('size', '?')} "
      f"({'srptd `ram:`' if scrape else BACKSTORES.get(meta.get('mode', 'ram'), '?')}), fio {meta.get('fio', '?')} "
      "(`bench/fio/srp-bench.fio`: direct=1, libaio, time_based, group_reporting), "
      f"initiator {meta.get('initiator', 'ib_srp ch_count=2')}. "
      f"Guest: Linux {meta.get('guest_kernel', '?')}, {meta.get('guest_cpus', '?')} vCPUs "
      f"(QEMU TCG, clocksource {meta.get('guest_clocksource', '?')}), soft-RoCE rxe. srptd: `{meta.get('srptd_args', '?').strip()}`"
      + (f", librbd `[client]`: `{meta['rbd_client']}`" if "rbd_client" in meta else "") + "."
      + (" Both targets logged in at once, each case run on one and then the other "
         "(`--interleave`; srptd first in odd rounds)." if meta.get("interleave") == "1" else ""))
    if "host_load_start" in meta:
        w("")
        w(f"Host: {meta.get('host_cpus', '?')} CPUs, load average at start "
          f"{meta['host_load_start']}, at end {meta.get('host_load_end', '?')} "
          "(other builds and VMs share the machine when the load exceeds 1).")
    if scrape:
        scrape_report(d, meta, order, perf, cpu, samples, w, errors, warnings)
        trouble_table(order, trouble, SCRAPE_TARGETS, ("srptd", f"srptd, scraped at {meta.get('scrape_hz', '?')}/s"),
                      w, check, errors, warnings)
        finish(out, errors, warnings)
        return
    w("")
    w("↑ higher is better, ↓ lower is better; the ratio is srptd / kernel.")
    w("")
    w("| case | jobs | figure | srptd | kernel ib_srpt | srptd / kernel |")
    w("|---|---|---|---|---|---|")
    for key in order:
        case, nj = key
        for metric, label in METRICS[case_kind(case)]:
            cells, meds = [], []
            for t in TARGETS:
                vals = [f[metric] if f else None for f in perf.get((key, t), [])]
                text, m = summary(vals)
                cells.append(text)
                meds.append(m)
                if check and (m is None or m <= 0):
                    errors.append(f"{case} numjobs={nj} {metric}: no positive figure for {t}")
            w(f"| {case} | {nj} | {label} | {cells[0]} | {cells[1]} | {ratio(meds[0], meds[1])} |")

    w("")
    w("CPU time per fio I/O, µs (↓), over a window of each run's steady state "
      "(from the first I/O completed to the last counter snapshot, taken every "
      f"{meta.get('snapshot_step_s', '?')} s, after which I/O still completed; "
      "I/Os = bytes the disk moved in the window / block size). *Guest CPU* is all busy time of the guest "
      "(/proc/stat user+nice+system+irq+softirq+steal, both vCPUs, less what the "
      "snapshots themselves cost): it includes "
      "fio, the ib_srp initiator and soft-RoCE (rxe) for both targets, so it is "
      "the apples-to-apples figure. *srptd process* is srptd's utime+stime (all "
      "threads, busy-polling included; rxe's requester work for srptd's queue "
      "pairs runs in its system calls, and softirqs that interrupt it are charged "
      "to it). *Kernel threads* is utime+stime of every kernel thread (kworkers "
      "running ib_srpt and LIO work, ksoftirqd, ...) in the same window; softirq "
      "work that interrupts a user task is charged to that task instead. Busy % "
      "is the guest's CPU utilisation (100 % = both vCPUs busy).")
    w("")
    w("| case | jobs | guest CPU srptd | guest CPU kernel | srptd / kernel "
      "| srptd process | kernel threads (srptd run) | kernel threads (kernel run) "
      "| busy % srptd | busy % kernel |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for key in order:
        case, nj = key
        col = {}
        for t in TARGETS:
            cs = cpu.get((key, t), [])
            for m in ("guest_us", "proc_us", "kthread_us", "guest_busy_pct"):
                col[(t, m)] = summary([c[m] if c else None for c in cs])
            if check and (col[(t, "guest_us")][1] is None or col[(t, "guest_us")][1] <= 0):
                errors.append(f"{case} numjobs={nj}: no guest CPU figure for {t}")
        if check and col[("srptd", "proc_us")][1] is None:
            errors.append(f"{case} numjobs={nj}: no srptd process CPU figure")
        w(f"| {case} | {nj} | {col[('srptd', 'guest_us')][0]} | {col[('kernel', 'guest_us')][0]} "
          f"| {ratio(col[('srptd', 'guest_us')][1], col[('kernel', 'guest_us')][1])} "
          f"| {col[('srptd', 'proc_us')][0]} | {col[('srptd', 'kthread_us')][0]} "
          f"| {col[('kernel', 'kthread_us')][0]} "
          f"| {col[('srptd', 'guest_busy_pct')][0]} | {col[('kernel', 'guest_busy_pct')][0]} |")

    trouble_table(order, trouble, TARGETS, ("srptd", "kernel ib_srpt"), w, check, errors, warnings)
    finish(out, errors, warnings)


def trouble_table(order, trouble, targets, labels, w, check, errors, warnings):
    w("")
    w("Initiator trouble over all rounds: ib_srp reconnects / failed work "
      "requests (QP errors) in the kernel log during the runs; anything but 0 / 0 "
      "is a stall or an error the initiator recovered from.")
    w("")
    w(f"| case | jobs | {labels[0]} | {labels[1]} |")
    w("|---|---|---|---|")
    for key in order:
        case, nj = key
        cells = []
        for t in targets:
            rc, qe = trouble.get((key, t), [0, 0])
            cells.append(f"{rc} / {qe}")
            if rc or qe:
                msg = f"{case} numjobs={nj} {t}: {rc} initiator reconnects, {qe} failed work requests"
                (errors if check else warnings).append(msg)
        w(f"| {case} | {nj} | {cells[0]} | {cells[1]} |")


def finish(out, errors, warnings):
    print("\n".join(out))
    for x in warnings:
        print(f"e2e-report: warning: {x}", file=sys.stderr)
    if errors:
        print(f"e2e-report: {len(errors)} missing or invalid figures:", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
