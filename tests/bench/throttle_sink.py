#!/usr/bin/env python3
"""An SMTP sink that serves at most N sessions at once (stdlib asyncio only).

  throttle_sink.py --port P --sessions N --stats FILE [--max-seconds S]

Accepts SMTP on 127.0.0.1:P. While N sessions are open, a new connection is
greeted with "421 4.7.0 Too many connections, try again later" and closed,
as a provider limiting connections per client does. Served sessions answer
EHLO (PIPELINING, 8BITMIME, SIZE), HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT
and take every message, storing nothing.

Every second and on SIGTERM/SIGINT it rewrites FILE with one line:
    "delivered=<n> refused=<n> sessions=<n> max_open=<n> first=<unix s> last=<unix s>"
(first/last: arrival of the first/last message). Exits after --max-seconds
(default 900). Only 127.0.0.1 is served.
"""

import argparse
import asyncio
import signal
import time


class Sink:
    def __init__(self, limit, stats_path):
        self.limit = limit
        self.stats_path = stats_path
        self.open = 0
        self.max_open = 0
        self.sessions = 0
        self.refused = 0
        self.delivered = 0
        self.first = 0.0
        self.last = 0.0

    def write_stats(self):
        with open(self.stats_path, "w") as out:
            out.write(
                "delivered=%d refused=%d sessions=%d max_open=%d first=%.3f last=%.3f\n"
                % (self.delivered, self.refused, self.sessions, self.max_open, self.first, self.last)
            )

    async def connection(self, reader, writer):
        if self.open >= self.limit:
            self.refused += 1
            try:
                writer.write(b"421 4.7.0 Too many connections, try again later\r\n")
                await writer.drain()
            except OSError:
                pass
            writer.close()
            return
        self.open += 1
        self.sessions += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await self.session(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def session(self, reader, writer):
        w = writer.write
        w(b"220 throttle.sink ESMTP\r\n")
        while True:
            line = await asyncio.wait_for(reader.readline(), 300)
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                w(b"250-throttle.sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 104857600\r\n")
            elif verb == b"HELO":
                w(b"250 throttle.sink\r\n")
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                w(b"250 2.0.0 Ok\r\n")
            elif verb == b"DATA":
                w(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                await writer.drain()
                while True:
                    data = await asyncio.wait_for(reader.readline(), 300)
                    if not data:
                        return
                    if data == b".\r\n":
                        break
                now = time.time()
                self.first = self.first or now
                self.last = now
                self.delivered += 1
                w(b"250 2.0.0 Ok: queued\r\n")
            elif verb == b"QUIT":
                w(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                return
            else:
                w(b"502 5.5.2 Error: command not recognized\r\n")
            if not reader._buffer:  # flush when the pipelined batch is answered
                await writer.drain()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--stats", required=True)
    parser.add_argument("--max-seconds", type=float, default=900)
    args = parser.parse_args()
    sink = Sink(args.sessions, args.stats)
    server = await asyncio.start_server(sink.connection, "127.0.0.1", args.port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    deadline = time.time() + args.max_seconds
    async with server:
        while not stop.is_set() and time.time() < deadline:
            sink.write_stats()
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
    sink.write_stats()


if __name__ == "__main__":
    asyncio.run(main())
