#!/usr/bin/env python3
"""Formats the results of tests/bench/intake.sh (reads its work directory)."""

import json
import os
import statistics
import sys

ORDER = {"sink": 0, "postfix": 1, "relayq": 2, "relayq-idem": 2.5, "relayq-ed25519": 3,
         "relayq-ed25519-idem": 3.5, "relayq-rsa2048": 4, "relayq-rsa2048-idem": 4.5}
NAMES = {"sink": "smtp-sink", "postfix": "postfix", "relayq": "relayq", "relayq-idem": "rq-idem",
         "relayq-ed25519": "rq-ed25519", "relayq-rsa2048": "rq-rsa2048",
         "relayq-ed25519-idem": "rq-ed-idem", "relayq-rsa2048-idem": "rq-rsa-idem"}


def human_size(n):
    n = int(n)
    if n % 1024 == 0 and n >= 1024:
        return f"{n // 1024} KB"
    return f"{n} B"


def fnum(x, nd=0):
    if x is None:
        return "-"
    if nd == 0:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}"


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def load_cases(path, hz):
    rows = []
    with open(path) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) < 10:
                continue
            run, rcv, mode, sess, size, count, secs, cin, call, status = p[:10]
            extra = p[10] if len(p) > 10 else ""
            by = p[11] if len(p) > 11 else ""
            count = int(count)
            secs = float(secs)
            r = {
                "run": int(run), "rcv": rcv, "mode": mode, "sess": int(sess), "size": int(size),
                "count": count, "secs": secs, "status": status, "extra": extra, "by": by,
                "rate": count / secs if secs > 0 and count else None,
                "mbps": count * int(size) / secs / 1e6 if secs > 0 and count else None,
                "cpu_in": (int(cin) / hz * 1000 / count) if cin not in ("NA", "") and count else None,
                "cpu_all": (int(call) / hz * 1000 / count) if call not in ("NA", "") and count else None,
            }
            kv = dict(x.split("=", 1) for x in extra.split() if "=" in x)
            r["other"] = float(kv["other_pct"]) if "other_pct" in kv else None
            ct = kv.get("client_ticks")
            r["client"] = (int(ct) / hz * 1000 / count) if ct and count else None
            rows.append(r)
    return rows


def lat_line(path):
    r = json.load(open(path))
    a, t = r["ack_ms"], r["txn_ms"]
    print(
        f"  {r['label']:7s} {r['rate']:g}/s ok={r['ok']} non2xx={r['non2xx']} errors={r['errors']} "
        f"ack p50={a['p50']:.2f} p99={a['p99']:.2f} ms  txn p50={t['p50']:.2f} p99={t['p99']:.2f} ms  "
        f"lag p99={r['lag_ms']['p99']:.1f} ms"
    )


def lat_problem(path):
    r = json.load(open(path))
    if r["non2xx"] or r["errors"] or r["unfinished"] or r["skipped"]:
        print(
            f"{r['label']} latency probe at {r['rate']:g}/s: non2xx={r['non2xx_by']} errors={r['errors_by']} "
            f"skipped={r['skipped']} unfinished={r['unfinished']} e.g. {r['examples'][:3]}"
        )


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--lat-line":
        return lat_line(sys.argv[2])
    if len(sys.argv) == 3 and sys.argv[1] == "--lat-problem":
        return lat_problem(sys.argv[2])
    work = sys.argv[1]
    meta = open(os.path.join(work, "meta.txt")).read().splitlines()
    hz = 100
    for m in meta:
        if m.startswith("clk_tck:"):
            hz = int(m.split(":")[1])
    rows = load_cases(os.path.join(work, "cases.tsv"), hz)
    lat = []
    lp = os.path.join(work, "latency.jsonl")
    if os.path.exists(lp):
        with open(lp) as f:
            lat = [json.loads(l) for l in f if l.strip()]
    problems = open(os.path.join(work, "problems.txt")).read().rstrip()

    out = []
    w = out.append
    w("relayq intake benchmark")
    w("=======================")
    for m in meta:
        if not m.startswith("clk_tck:"):
            w(m)
    w("")
    w("Driver: smtp-source (Postfix) -c -s SESSIONS -m MSGS -l SIZE -f bench@example.com -t sink@example.net;")
    w("  conn=new: new TCP connection per message (HELO, MAIL, RCPT, DATA, QUIT) as most apps submit;")
    w("  conn=reuse: smtp-source -d, messages follow each other on the same session (no RSET).")
    w("  size = payload bytes (-l), ~150 bytes of headers extra; MB/s counts payload, 10^6 bytes.")
    w("  Receivers: smtp-sink = discards (ceiling); postfix = own instance, fsync per queue file,")
    w("  relays to the sink; relayq = fresh spool per case, relays to the sink through a route.")
    w("  Client and server share the machine's CPUs. other% = CPU used during the case by processes other")
    w("  than receiver and client, in % of all CPUs (max over runs); high values mean a noisy measurement.")
    w("")

    keys = sorted(
        {(r["mode"], r["sess"], r["size"], r["rcv"]) for r in rows},
        key=lambda k: (0 if k[0] == "new" else 1, k[1], k[2], ORDER.get(k[3], 9)),
    )
    runs = max((r["run"] for r in rows), default=1)
    agg = {}
    for k in keys:
        rs = [r for r in rows if (r["mode"], r["sess"], r["size"], r["rcv"]) == k]
        agg[k] = {
            "n": len(rs),
            "count": med([r["count"] for r in rs]),
            "secs": med([r["secs"] for r in rs]),
            "rate": med([r["rate"] for r in rs]),
            "mbps": med([r["mbps"] for r in rs]),
            "cpu_in": med([r["cpu_in"] for r in rs]),
            "cpu_all": med([r["cpu_all"] for r in rs]),
            "other": max([r["other"] for r in rs if r["other"] is not None], default=None),
            "client": med([r["client"] for r in rs]),
            "status": ",".join(sorted({r["status"] for r in rs})),
            "rates": [r["rate"] for r in rs],
            "extra": [r["extra"] for r in rs],
            "by": [r["by"] for r in rs],
        }

    med_note = f" (median of {runs} runs)" if runs > 1 else ""
    w(f"Throughput{med_note}")
    hdr = f"{'receiver':10} {'conn':5} {'sess':>4} {'size':>7} {'msgs':>7} {'seconds':>8} {'msg/s':>8} {'MB/s':>7} {'cpu ms/msg':>10} {'other%':>6}  status"
    w(hdr)
    w("-" * len(hdr))
    prev = None
    for k in keys:
        a = agg[k]
        mode, sess, size, rcv = k
        if prev is not None and prev != (mode, sess, size):
            w("")
        prev = (mode, sess, size)
        note = a["status"]
        if a["status"] == "timebound":
            note = f"time-bounded at CASE_TIMEOUT (msgs = accepted before the stop)"
        if runs > 1 and len([x for x in a["rates"] if x]) > 1:
            note += "  runs: " + "/".join(fnum(x) for x in a["rates"])
        w(
            f"{NAMES.get(rcv, rcv):10} {mode:5} {sess:>4} {human_size(size):>7} {fnum(a['count']):>7} "
            f"{fnum(a['secs'], 2):>8} {fnum(a['rate']):>8} {fnum(a['mbps'], 1):>7} {fnum(a['cpu_in'], 3):>10} {fnum(a['other']):>6}  {note}"
        )
    w("")

    w("Ratios of msg/s")
    hdr = f"{'conn':5} {'sess':>4} {'size':>7} {'relayq/postfix':>15} {'relayq/smtp-sink':>17} {'postfix/smtp-sink':>18}"
    w(hdr)
    w("-" * len(hdr))
    cases = sorted({(k[0], k[1], k[2]) for k in keys}, key=lambda c: (0 if c[0] == "new" else 1, c[1], c[2]))

    def ratio(c, a, b):
        ra = agg.get((*c, a), {}).get("rate")
        rb = agg.get((*c, b), {}).get("rate")
        return f"{ra / rb:.2f}x" if ra and rb else "-"

    for c in cases:
        w(
            f"{c[0]:5} {c[1]:>4} {human_size(c[2]):>7} {ratio(c, 'relayq', 'postfix'):>15} "
            f"{ratio(c, 'relayq', 'sink'):>17} {ratio(c, 'postfix', 'sink'):>18}"
        )
    w("")

    w(f"CPU time per message, ms (utime+stime from /proc, CLK_TCK={hz}; resolution {1000 / hz:.0f} ms per case total)")
    w("  relayq: its process (all threads). postfix: master + all its children (live ones, and exited")
    w("    ones via cutime/cstime). Both relay everything to the smtp-sink while and after they accept:")
    w("    'intake' = CPU while smtp-source ran (includes whatever delivery overlapped);")
    w("    'all' = until everything was relayed to the sink (queue empty): accept + deliver + logging.")
    w("  client = smtp-source's own CPU per message, for scale.")
    hdr = f"{'receiver':10} {'conn':5} {'sess':>4} {'size':>7} {'intake':>8} {'all':>8} {'client':>7}  breakdown (ticks, by process name)"
    w(hdr)
    w("-" * len(hdr))
    for k in keys:
        a = agg[k]
        mode, sess, size, rcv = k
        by = a["by"][len(a["by"]) // 2] if a["by"] else ""
        if rcv != "postfix":
            by = ""
        w(
            f"{NAMES.get(rcv, rcv):10} {mode:5} {sess:>4} {human_size(size):>7} {fnum(a['cpu_in'], 3):>8} "
            f"{fnum(a['cpu_all'], 3):>8} {fnum(a['client'], 3):>7}  {' '.join(by.split()[:8])}"
        )

    keyed = sorted({k for k in keys if k[3].endswith("-idem") and (*k[:3], k[3][: -len("-idem")]) in agg})
    if keyed:
        w("")
        w("Cost of idempotency keys (IDEMPOTENCY_KEY): intake CPU per message with a key on every")
        w("message against the same receiver without keys (budget: +5 %)")
        hdr = f"{'receiver':12} {'conn':5} {'sess':>4} {'size':>7} {'keyed':>8} {'plain':>8} {'change':>8}"
        w(hdr)
        w("-" * len(hdr))
        for k in keyed:
            mode, sess, size, rcv = k
            with_keys = agg[k]["cpu_in"]
            without = agg[(mode, sess, size, rcv[: -len("-idem")])]["cpu_in"]
            change = f"{(with_keys / without - 1) * 100:+.1f} %" if with_keys and without else "-"
            w(
                f"{NAMES.get(rcv, rcv):12} {mode:5} {sess:>4} {human_size(size):>7} "
                f"{fnum(with_keys, 3):>8} {fnum(without, 3):>8} {change:>8}"
            )
    rq = [x for x in rows if x["rcv"].startswith("relayq")]
    if rq:
        w("")
        w("relayq after each case: messages still queued at shutdown + relayed to the sink (must equal")
        w("the 250s), relay drain time after the client finished, and the spool's size at shutdown")
        w("(apparent bytes of its files / bytes allocated on disk; the file does not shrink):")
        for x in sorted(rq, key=lambda x: (0 if x["mode"] == "new" else 1, x["sess"], x["size"], x["run"])):
            kv = dict(e.split("=", 1) for e in x["extra"].split() if "=" in e)
            n = x["count"]
            try:
                ab, al = int(kv.get("spool_bytes", 0)), int(kv.get("spool_alloc", 0))
            except ValueError:
                ab = al = 0
            per = f"{ab / n:,.0f} / {al / n:,.0f} B/msg" if n else "-"
            w(
                f"  {x['mode']:5} s={x['sess']:<3} {human_size(x['size']):>7} run {x['run']}: acked {n}, queued={kv.get('queued', '?')} "
                f"sent={kv.get('sent', '?')}, drain {kv.get('drain_s', '?')} s, spool {ab / 1e6:,.1f} / {al / 1e6:,.1f} MB, {per}"
            )
    w("")

    if lat:
        r0 = lat[0]
        mode = r0["mode"] + (f" (pool of {r0['pool']} sessions)" if r0["mode"] == "pool" else " (new TCP connection per message)")
        w(f"Acceptance latency at a fixed offered rate: tests/bench/latency.py, open loop, {r0['duration']:g} s per probe,")
        w(f"  {mode}, {r0['size']} byte body, EHLO/MAIL/RCPT/DATA/dot/QUIT.")
        w("  ack = final dot written -> 250 reply; txn = connect() -> 250 reply to the dot; ms.")
        w("  achvd/s = 2xx per second until the last one; err = errors (timeouts, resets) + unfinished.")
        w("  lag p99 = how late transactions started against the schedule: large values mean the load")
        w("  generator itself was short of CPU (or, in pool mode, all sessions were busy).")
        hdr = (
            f"{'receiver':10} {'rate/s':>6} {'ok':>6} {'non2xx':>6} {'err':>4} {'achvd/s':>7}"
            f" {'ack p50':>8} {'p90':>7} {'p99':>7} {'max':>7}  {'txn p50':>8} {'p90':>7} {'p99':>7} {'max':>7} {'lag p99':>8}"
        )
        w(hdr)
        w("-" * len(hdr))
        for r in sorted(lat, key=lambda r: (r["rate"], ORDER.get(r["label"], 9))):
            a, t = r["ack_ms"], r["txn_ms"]
            w(
                f"{NAMES.get(r['label'], r['label']):10} {r['rate']:>6g} {r['ok']:>6} {r['non2xx']:>6} {r['errors'] + r['unfinished']:>4} "
                f"{r['achieved_rate']:>7.0f} {a['p50']:>8.2f} {a['p90']:>7.2f} {a['p99']:>7.2f} {a['max']:>7.1f}  "
                f"{t['p50']:>8.2f} {t['p90']:>7.2f} {t['p99']:>7.2f} {t['max']:>7.1f} {r['lag_ms']['p99']:>8.1f}"
            )
            if r["non2xx_by"] or r["errors_by"] or r["skipped"]:
                w(f"{'':10}   non2xx={r['non2xx_by']} errors={r['errors_by']} skipped={r['skipped']} unfinished={r['unfinished']}")
        w("")

    w("Problems seen")
    w(problems if problems else "  none")
    print("\n".join(out))


if __name__ == "__main__":
    main()
