#!/usr/bin/env python3
"""Acceptance-latency probe for an SMTP receiver at a fixed offered rate.

Open-loop load generator (python3 asyncio, stdlib only). Transactions are
*scheduled* at a fixed rate (--rate per second for --duration seconds),
independently of how fast the server answers, so a slow server builds up
in-flight transactions instead of silently lowering the offered load.

Each transaction sends EHLO (HELO fallback), MAIL, RCPT, DATA, the message and
the final dot, then QUIT (mode "new") or RSET-free reuse (mode "pool").

Timings per transaction:
  ack   final dot handed to the kernel -> 250 reply to the dot
  txn   transaction start -> 250 reply to the dot
        (mode new: from connect(); mode pool: from MAIL FROM on an open session)
  lag   how late the transaction started against its schedule (generator or
        pool saturation; in pool mode this includes waiting for a free session)

Modes:
  new   one new TCP connection per message (how most applications submit)
  pool  --pool persistent sessions; each scheduled message waits for a free
        session (queueing time shows up in "lag", not in "txn")

Everything is bounded: sending stops after --duration seconds; in-flight work
gets at most --timeout more seconds, then it is cancelled and counted as
"unfinished"; at most --max-inflight transactions run at once, further
scheduled ones are counted as "skipped" (the server is not keeping up).

Traffic goes only to the host given (default 127.0.0.1); the script refuses
non-loopback addresses.

Output: a human-readable summary, or one JSON object with --json.

For accepted -> delivered latency (tests/bench/delivery.sh): --sent-log FILE
adds an "X-Bench-Id: <run>.<seq>" header to every message and writes one line
per acknowledged message to FILE: "<id> <final dot sent> <250 received>" (unix
seconds, wall clock, comparable with timed_sink.py's arrival times).
--idempotency-key adds a unique "Idempotency-Key: lat.<run>.<seq>" header to
every message (relayq's idempotent submission; docs/idempotency.md).
--domains N spreads recipients over N domains with --rcpt-fmt (default
"r{seq}@d{dom}.test", dom = 1 + seq mod N).
"""

import argparse
import asyncio
import ipaddress
import json
import math
import sys
import time


def percentile(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    k = (len(sorted_vals) - 1) * p / 100.0
    lo = math.floor(k)
    hi = math.ceil(k)
    if lo == hi:
        return sorted_vals[int(k)]
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def summarize(vals):
    s = sorted(vals)
    return {
        "n": len(s),
        "p50": percentile(s, 50),
        "p90": percentile(s, 90),
        "p99": percentile(s, 99),
        "max": s[-1] if s else float("nan"),
    }


def build_message(size, sender, rcpt, seq):
    hdr = (
        f"From: <{sender}>\r\n"
        f"To: <{rcpt}>\r\n"
        f"Subject: latency probe {seq}\r\n"
        f"Message-ID: <lat.{seq}.{time.time_ns()}@bench.invalid>\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
        "\r\n"
    ).encode()
    line = b"X" * 76 + b"\r\n"  # no leading dots: no stuffing needed
    body = bytearray()
    while len(body) + len(line) <= size:
        body += line
    rest = size - len(body)
    if rest >= 3:
        body += b"Y" * (rest - 2) + b"\r\n"
    return hdr + bytes(body) + b".\r\n"


def rcpt_for(args, seq):
    if not args.domains:
        return args.rcpt
    return args.rcpt_fmt.format(seq=seq, dom=1 + seq % args.domains)


class SmtpError(Exception):
    def __init__(self, stage, code, text):
        super().__init__(f"{stage}: {code} {text}")
        self.stage = stage
        self.code = code
        self.text = text


class Session:
    def __init__(self, args):
        self.args = args
        self.reader = None
        self.writer = None

    async def reply(self, stage):
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), self.args.timeout)
            if not line:
                raise ConnectionResetError(f"EOF while waiting for {stage} reply")
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                break
            if len(lines) > 100:
                raise SmtpError(stage, 0, "reply longer than 100 lines")
        try:
            code = int(lines[-1][:3])
        except ValueError:
            raise SmtpError(stage, 0, lines[-1][:80].decode("latin1", "replace"))
        return code, b"".join(lines).decode("latin1", "replace").strip()

    async def cmd(self, line, stage, want=2):
        self.writer.write(line)
        await self.writer.drain()
        code, text = await self.reply(stage)
        if code // 100 != want:
            raise SmtpError(stage, code, text)
        return code, text

    async def open(self):
        a = self.args
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(a.host, a.port, limit=1 << 16), a.timeout
        )
        code, text = await self.reply("banner")
        if code // 100 != 2:
            raise SmtpError("banner", code, text)
        self.writer.write(b"EHLO latency.bench.invalid\r\n")
        await self.writer.drain()
        code, text = await self.reply("ehlo")
        if code // 100 != 2:
            await self.cmd(b"HELO latency.bench.invalid\r\n", "helo")

    async def transaction(self, msg, seq=0):
        """Returns ack seconds (final dot -> 250)."""
        a = self.args
        await self.cmd(f"MAIL FROM:<{a.sender}>\r\n".encode(), "mail")
        await self.cmd(f"RCPT TO:<{rcpt_for(a, seq)}>\r\n".encode(), "rcpt")
        await self.cmd(b"DATA\r\n", "data", want=3)
        self.writer.write(msg)
        await self.writer.drain()
        t_dot = time.perf_counter()
        w_dot = time.time()
        code, text = await self.reply("dot")
        t_ack = time.perf_counter()
        if code // 100 != 2:
            raise SmtpError("dot", code, text)
        if a.sent_lines is not None:
            a.sent_lines.append(f"{a.run_id}.{seq} {w_dot:.6f} {time.time():.6f}\n")
        return t_ack - t_dot

    async def close(self, polite=True):
        if self.writer is None:
            return
        try:
            if polite:
                self.writer.write(b"QUIT\r\n")
                await self.writer.drain()
                await asyncio.wait_for(self.reader.readline(), min(5, self.args.timeout))
        except Exception:
            pass
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except Exception:
            pass
        self.writer = None


class Stats:
    def __init__(self):
        self.ack = []
        self.txn = []
        self.lag = []
        self.ok = 0
        self.non2xx = {}  # "stage code" -> count
        self.errors = {}  # exception kind -> count
        self.examples = []
        self.skipped = 0
        self.unfinished = 0
        self.scheduled = 0
        self.started = 0
        self.t_last_ok = None

    def fail(self, exc):
        if isinstance(exc, SmtpError):
            key = f"{exc.stage} {exc.code}"
            self.non2xx[key] = self.non2xx.get(key, 0) + 1
            text = str(exc)
        else:
            key = type(exc).__name__
            if isinstance(exc, asyncio.TimeoutError):
                key = "timeout"
            self.errors[key] = self.errors.get(key, 0) + 1
            text = f"{key}: {exc}"
        if len(self.examples) < 5 and text not in self.examples:
            self.examples.append(text)


async def run_new(args, msg_for, stats, sched):
    inflight = set()

    async def one(seq, t_sched):
        t0 = time.perf_counter()
        stats.lag.append(t0 - t_sched)
        s = Session(args)
        polite = True
        try:
            await s.open()
            ack = await s.transaction(msg_for(seq), seq)
            t1 = time.perf_counter()
            stats.t_last_ok = t1
            stats.ok += 1
            stats.ack.append(ack)
            stats.txn.append(t1 - t0)
        except asyncio.CancelledError:
            polite = False
            raise
        except Exception as e:  # noqa: BLE001 - everything is counted
            polite = not isinstance(e, (ConnectionError, OSError, asyncio.TimeoutError))
            stats.fail(e)
        finally:
            await s.close(polite)

    async for seq, t_sched in sched():
        if len(inflight) >= args.max_inflight:
            stats.skipped += 1
            continue
        stats.started += 1
        t = asyncio.ensure_future(one(seq, t_sched))
        inflight.add(t)
        t.add_done_callback(inflight.discard)
    return inflight


async def run_pool(args, msg_for, stats, sched):
    q = asyncio.Queue(maxsize=args.max_inflight)

    async def worker():
        s = None
        while True:
            item = await q.get()
            seq, t_sched = item
            try:
                if s is None:
                    s = Session(args)
                    await s.open()
                t0 = time.perf_counter()
                stats.lag.append(t0 - t_sched)
                ack = await s.transaction(msg_for(seq), seq)
                t1 = time.perf_counter()
                stats.t_last_ok = t1
                stats.ok += 1
                stats.ack.append(ack)
                stats.txn.append(t1 - t0)
            except asyncio.CancelledError:
                if s is not None:
                    await s.close(False)
                raise
            except Exception as e:  # noqa: BLE001
                stats.fail(e)
                if s is not None:
                    await s.close(False)
                s = None
            finally:
                q.task_done()

    workers = [asyncio.ensure_future(worker()) for _ in range(args.pool)]
    async for seq, t_sched in sched():
        if q.full():
            stats.skipped += 1
            continue
        stats.started += 1
        q.put_nowait((seq, t_sched))

    async def drain_then_stop():
        await q.join()

    waiter = asyncio.ensure_future(drain_then_stop())
    return waiter, workers


async def main_async(args):
    stats = Stats()
    cache = {}

    def msg_for(seq):
        # Building per message keeps Message-IDs unique; cache the body part.
        if "body" not in cache:
            cache["body"] = build_message(args.size, args.sender, args.rcpt, 0)
            cache["split"] = cache["body"].index(b"\r\n\r\n") + 4
        hdr = (
            f"From: <{args.sender}>\r\nTo: <{args.rcpt}>\r\n"
            f"Subject: latency probe {seq}\r\n"
            f"Message-ID: <lat.{seq}.{args.run_id}@bench.invalid>\r\n"
            + (f"X-Bench-Id: {args.run_id}.{seq}\r\n" if args.sent_lines is not None else "")
            + (f"Idempotency-Key: lat.{args.run_id}.{seq}\r\n" if args.idempotency_key else "")
            + "\r\n"
        ).encode()
        return hdr + cache["body"][cache["split"]:]

    total = int(round(args.rate * args.duration))

    async def sched():
        start = time.perf_counter()
        seq = 0
        while seq < total:
            now = time.perf_counter()
            if now - start > args.duration + 1.0:
                break  # generator fell far behind; stay bounded in time
            due = int((now - start) * args.rate) + 1
            while seq < min(due, total):
                stats.scheduled += 1
                yield seq, start + seq / args.rate
                seq += 1
            await asyncio.sleep(min(0.005, 1.0 / args.rate))
        stats.scheduled = max(stats.scheduled, seq)

    t_start = time.perf_counter()
    if args.mode == "new":
        pending = await run_new(args, msg_for, stats, sched)
    else:
        pending = await run_pool(args, msg_for, stats, sched)
    t_sent = time.perf_counter()

    # Let in-flight work finish, bounded.
    if args.mode == "new":
        if pending:
            done, not_done = await asyncio.wait(set(pending), timeout=args.timeout + 5)
            stats.unfinished += len(not_done)
            for t in not_done:
                t.cancel()
            if not_done:
                await asyncio.wait(not_done, timeout=5)
    else:
        waiter, workers = pending
        try:
            await asyncio.wait_for(waiter, args.timeout + 5)
        except asyncio.TimeoutError:
            stats.unfinished += 1  # at least one; exact count unknown
        for w in workers:
            w.cancel()
        await asyncio.wait(workers, timeout=5)
    t_end = time.perf_counter()

    return {
        "host": args.host,
        "port": args.port,
        "mode": args.mode,
        "pool": args.pool if args.mode == "pool" else None,
        "rate": args.rate,
        "duration": args.duration,
        "size": args.size,
        "scheduled": stats.scheduled,
        "started": stats.started,
        "ok": stats.ok,
        "non2xx": sum(stats.non2xx.values()),
        "non2xx_by": stats.non2xx,
        "errors": sum(stats.errors.values()),
        "errors_by": stats.errors,
        "skipped": stats.skipped,
        "unfinished": stats.unfinished,
        "examples": stats.examples,
        "send_seconds": t_sent - t_start,
        "total_seconds": t_end - t_start,
        "achieved_rate": stats.ok / (stats.t_last_ok - t_start) if stats.t_last_ok else 0.0,
        "ack_ms": {k: v * 1000 if k != "n" else v for k, v in summarize(stats.ack).items()},
        "txn_ms": {k: v * 1000 if k != "n" else v for k, v in summarize(stats.txn).items()},
        "lag_ms": {k: v * 1000 if k != "n" else v for k, v in summarize(stats.lag).items()},
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, default=500.0, help="offered messages per second")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of offered load (max 600)")
    p.add_argument("--size", type=int, default=2048, help="body bytes (headers extra)")
    p.add_argument("--mode", choices=["new", "pool"], default="new")
    p.add_argument("--pool", type=int, default=20, help="sessions in pool mode")
    p.add_argument("--max-inflight", type=int, default=2000)
    p.add_argument("--timeout", type=float, default=30.0, help="per reply, and for the final drain")
    p.add_argument("--sender", default="latency@bench.example.com")
    p.add_argument("--rcpt", default="sink@bench.example.net")
    p.add_argument("--label", default="")
    p.add_argument("--sent-log", help="write '<id> <dot sent> <250 received>' per acknowledged message")
    p.add_argument("--domains", type=int, default=0, help="spread recipients over this many domains")
    p.add_argument("--rcpt-fmt", default="r{seq}@d{dom}.test", help="recipient with --domains")
    p.add_argument("--idempotency-key", action="store_true",
                   help="add a unique 'Idempotency-Key: lat.<run>.<seq>' header to every message")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    ip = ipaddress.ip_address(args.host)
    if not ip.is_loopback:
        p.error("refusing a non-loopback host: this tool is for local benchmarks only")
    if not (0 < args.rate <= 20000) or not (0 < args.duration <= 600):
        p.error("rate must be in (0, 20000], duration in (0, 600]")
    if not (0 < args.timeout <= 300):
        p.error("timeout must be in (0, 300]")
    args.run_id = time.time_ns()
    args.sent_lines = [] if args.sent_log else None

    res = asyncio.run(main_async(args))
    if args.sent_log:
        with open(args.sent_log, "w") as f:
            f.write("".join(args.sent_lines))
    res["label"] = args.label
    if args.json:
        print(json.dumps(res))
        return 0
    pool = f" pool={args.pool}" if args.mode == "pool" else ""
    print(
        f"{args.label or 'target'} {args.host}:{args.port} mode={args.mode}{pool} "
        f"offered={args.rate:g}/s x {args.duration:g}s size={args.size}"
    )
    print(
        f"  ok={res['ok']} non2xx={res['non2xx']} errors={res['errors']} skipped={res['skipped']} "
        f"unfinished={res['unfinished']} achieved={res['achieved_rate']:.0f}/s"
    )
    for k in ("ack_ms", "txn_ms", "lag_ms"):
        s = res[k]
        print(
            f"  {k[:-3]:4s} ms  p50={s['p50']:.2f} p90={s['p90']:.2f} p99={s['p99']:.2f} max={s['max']:.2f}"
        )
    if res["non2xx_by"] or res["errors_by"]:
        print(f"  non2xx_by={res['non2xx_by']} errors_by={res['errors_by']}")
        for e in res["examples"]:
            print(f"  e.g. {e}")
    return 0 if res["non2xx"] == 0 and res["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
