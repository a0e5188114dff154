#!/usr/bin/env python3
"""Report on a trace of tests/vm/srptd-1m-writes.sh's `trace` option: how
many rdma_rxe retransmit-timer fires found a packet sent and not yet
acknowledged (request PSN ahead of the completer's PSN: the condition under
which rxe retries, the trigger of docs/stalls.md), and for each such fire
the SENDs, their arrival at the peer's responder and the ACKs around it.

Usage: rxe-psn-report.py TRACE [WINDOW_S]   (window default 0.05 s)
The struct offsets come from rxe-offsets.txt beside TRACE (written by the
script's BTF lookup).
"""
import os
import re
import sys

LINE = re.compile(r"^\s*(\S+)\s+\[(\d+)\]\s+\S+\s+([\d.]+):\s+(\w+):\s+\([^)]*\)\s*(.*)$")


def events(path):
    out = []
    with open(path) as f:
        for line in f:
            m = LINE.match(line)
            if m:
                _comm, _cpu, ts, name, rest = m.groups()
                kv = dict(x.split("=", 1) for x in rest.split() if "=" in x)
                out.append((float(ts), name, kv, line.rstrip()))
    return out


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    window = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
    with open(os.path.join(os.path.dirname(sys.argv[1]) or ".", "rxe-offsets.txt")) as f:
        offsets = {k: int(v) for k, v, _size in (line.split() for line in f)}
    timer_in_qp = offsets["rxe_qp.retrans_timer"]
    ev = events(sys.argv[1])
    fires = [e for e in ev if e[1] == "rxe_rt"]
    unacked = [e for e in fires if e[2].get("reqpsn") != e[2].get("comppsn")]
    print(f"events {len(ev)}, timer fires {len(fires)} (with PSN fields "
          f"{sum(1 for e in fires if 'reqpsn' in e[2])}), "
          f"fires with an unacknowledged packet {len(unacked)}")
    # Time from each SEND's transmission to the ACK that covers it, per
    # sending QP: how long a packet stays unacknowledged.
    sent, waits = {}, []
    for ts, name, kv, _line in ev:
        if name == "rxe_xmit":
            sent.setdefault(kv["qp"], []).append((int(kv["psn"]), ts))
        elif name == "rxe_cq" and kv["qp"] in sent:
            acked = int(kv["psn"])
            pending = sent[kv["qp"]]
            waits += [ts - t for p, t in pending if p <= acked]
            sent[kv["qp"]] = [(p, t) for p, t in pending if p > acked]
    if waits:
        waits.sort()
        pct = lambda q: waits[min(len(waits) - 1, int(q * len(waits)))] * 1e3
        print(f"SEND to ACK over {len(waits)} SENDs: p50 {pct(0.5):.3f} ms, "
              f"p99 {pct(0.99):.3f} ms, p99.9 {pct(0.999):.3f} ms, max {waits[-1] * 1e3:.3f} ms; "
              f"never acknowledged {sum(len(v) for v in sent.values())}")
    for ts, _name, kv, line in unacked:
        qp = hex(int(kv["t"], 16) - timer_in_qp)
        lo_psn, hi_psn = int(kv["comppsn"]) - 2, int(kv["reqpsn"]) + 1
        print(f"\n=== {line}")
        for t2, name, k, l2 in ev:
            if not ts - window <= t2 <= ts + window:
                continue
            mine = k.get("qp") == qp or k.get("t") == kv["t"]
            near = "psn" in k and lo_psn <= int(k["psn"]) <= hi_psn
            if mine or near or name in ("rxe_regmr", "rxe_qperr"):
                print(("  * " if mine else "    ") + l2[:230])


if __name__ == "__main__":
    main()
