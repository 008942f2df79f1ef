#!/usr/bin/env python3
"""A tiny SMTP sink that records when each message arrived (stdlib only).

  timed_sink.py serve --port P --out FILE [--max-seconds S]
      Accepts SMTP on 127.0.0.1:P (EHLO with PIPELINING/8BITMIME/SIZE, HELO,
      MAIL, RCPT, DATA, RSET, NOOP, QUIT), answers 250 to every message and
      stores nothing but one line per message in FILE:
          "<X-Bench-Id value or -> <arrival unix time, s>"
      The arrival time is taken when the final dot has been read, before the
      250 is written. FILE is flushed every second and on SIGTERM/SIGINT.

  timed_sink.py tarpit --port P [--max-seconds S]
      Accepts connections and never answers (no greeting): a delivery gate
      that keeps an SMTP client waiting without failing it.

  timed_sink.py report --sent SENT --arrivals FILE [--json]
      Joins latency.py --sent-log lines ("<id> <final dot sent, unix s> ...")
      with the arrivals by id and prints delay = arrival - final dot sent:
      n, missing (sent but never arrived), p50/p90/p99/max in ms.

Everything is bounded: the server exits after --max-seconds (default 900).
Only loopback addresses are served.
"""

import argparse
import asyncio
import json
import math
import signal
import sys
import time


def percentile(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    k = (len(sorted_vals) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return sorted_vals[int(k)]
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


class Sink:
    def __init__(self, out):
        self.out = out
        self.lines = []
        self.count = 0
        self.sessions = 0

    def flush(self):
        if self.lines:
            self.out.write("".join(self.lines))
            self.out.flush()
            self.lines = []

    async def session(self, reader, writer):
        self.sessions += 1
        w = writer.write
        try:
            w(b"220 timed-sink.bench.invalid ESMTP\r\n")
            while True:
                line = await reader.readline()
                if not line:
                    return
                verb = line[:4].upper()
                if verb == b"EHLO":
                    w(b"250-timed-sink.bench.invalid\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                      b"250-SIZE 104857600\r\n250 ENHANCEDSTATUSCODES\r\n")
                elif verb == b"DATA":
                    w(b"354 go ahead\r\n")
                    await writer.drain()
                    bench_id = "-"
                    in_headers = True
                    while True:
                        data = await reader.readline()
                        if not data:
                            return
                        if data == b".\r\n" or data == b".\n":
                            break
                        if in_headers:
                            if data in (b"\r\n", b"\n"):
                                in_headers = False
                            elif data[:11].lower() == b"x-bench-id:":
                                bench_id = data[11:].strip().decode("ascii", "replace") or "-"
                    self.lines.append(f"{bench_id} {time.time():.6f}\n")
                    self.count += 1
                    w(b"250 2.0.0 ok\r\n")
                elif verb == b"QUIT":
                    w(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    return
                elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                    w(b"250 2.0.0 ok\r\n")
                else:
                    w(b"502 5.5.2 not implemented\r\n")
                # With pipelining, answer a whole batch of commands at once.
                if not reader._buffer:  # noqa: SLF001 - stdlib StreamReader
                    await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass


async def serve(args):
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    held = []

    if args.cmd == "tarpit":
        async def handler(reader, writer):
            held.append(writer)  # never answer; closed at exit
            try:
                await reader.read()  # until the client gives up
            except Exception:  # noqa: BLE001
                pass
        server = await asyncio.start_server(handler, args.host, args.port, backlog=1024)
        try:
            await asyncio.wait_for(stop.wait(), args.max_seconds)
        except asyncio.TimeoutError:
            pass
        server.close()
        for w in held:
            w.close()
        return 0

    with open(args.out, "a") as out:
        sink = Sink(out)
        server = await asyncio.start_server(sink.session, args.host, args.port, backlog=1024)
        deadline = loop.time() + args.max_seconds
        while not stop.is_set() and loop.time() < deadline:
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
            sink.flush()
        server.close()
        sink.flush()
        print(f"timed_sink: {sink.count} messages in {sink.sessions} sessions", file=sys.stderr)
    return 0


def report(args):
    arrivals = {}
    with open(args.arrivals) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0] != "-":
                arrivals.setdefault(parts[0], float(parts[1]))
    delays = []
    missing = 0
    with open(args.sent) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2:
                continue
            t = arrivals.get(parts[0])
            if t is None:
                missing += 1
            else:
                delays.append((t - float(parts[1])) * 1000.0)
    delays.sort()
    res = {
        "n": len(delays),
        "missing": missing,
        "p50": percentile(delays, 50),
        "p90": percentile(delays, 90),
        "p99": percentile(delays, 99),
        "max": delays[-1] if delays else float("nan"),
        "min": delays[0] if delays else float("nan"),
    }
    if args.json:
        print(json.dumps(res))
    else:
        print(
            f"delivered={res['n']} missing={missing} delay ms p50={res['p50']:.1f} "
            f"p90={res['p90']:.1f} p99={res['p99']:.1f} max={res['max']:.1f}"
        )
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("serve", "tarpit"):
        s = sub.add_parser(name)
        s.add_argument("--host", default="127.0.0.1")
        s.add_argument("--port", type=int, required=True)
        s.add_argument("--max-seconds", type=float, default=900.0)
        if name == "serve":
            s.add_argument("--out", required=True)
    r = sub.add_parser("report")
    r.add_argument("--sent", required=True)
    r.add_argument("--arrivals", required=True)
    r.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.cmd == "report":
        return report(args)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        p.error("loopback only")
    if not 0 < args.max_seconds <= 7200:
        p.error("--max-seconds must be in (0, 7200]")
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
