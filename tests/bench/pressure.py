#!/usr/bin/env python3
"""Connection-pressure driver for tests/bench/pressure.sh (prints numbers,
asserts nothing).

Holds MAX_CONN sessions at an SMTP server: half idle after the greeting, half
trickling a DATA transfer one octet a second. Then WAITING more clients
connect and say nothing; closed attackers reconnect after RECONNECT_DELAY
seconds (a hostile or broken local process keeps the pressure on). Then
PROBES real clients, one every GAP seconds, each send one message and record
how long the greeting and the whole transaction took. Every wait is bounded.

Output: one "probe" line per real client, then one "summary" line of
key=value pairs, then "attackers" counts.
"""

import argparse
import selectors
import socket
import statistics
import threading
import time

PREAMBLE = (b"EHLO attacker.test\r\nMAIL FROM:<a@attacker.test>\r\n"
            b"RCPT TO:<b@dest.test>\r\nDATA\r\n")


class Attack:
    def __init__(self, port, reconnect_delay):
        self.port = port
        self.reconnect_delay = reconnect_delay
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.greeted = 0
        self.closed = 0
        self.closed_with_421 = 0
        self.connects = 0
        self.pending = []  # (due, kind)

    def open(self, kind):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", self.port))
        state = {"kind": kind, "greeted": False, "said": b"", "started": False}
        self.selector.register(sock, selectors.EVENT_READ, state)
        with self.lock:
            self.connects += 1

    def run(self, deadline):
        next_trickle = time.time() + 1
        while not self.stop.is_set() and time.time() < deadline:
            now = time.time()
            with self.lock:
                due = [kind for at, kind in self.pending if at <= now]
                self.pending = [(at, kind) for at, kind in self.pending if at > now]
            for kind in due:
                self.open(kind)
            for key, _ in self.selector.select(timeout=0.1):
                self.readable(key)
            if time.time() >= next_trickle:
                next_trickle += 1
                self.trickle()
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()

    def readable(self, key):
        sock, state = key.fileobj, key.data
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            state["said"] = (state["said"] + data)[-4096:]
            if not state["greeted"] and b"220 " in state["said"]:
                state["greeted"] = True
                with self.lock:
                    self.greeted += 1
            return
        self.selector.unregister(sock)
        sock.close()
        with self.lock:
            self.closed += 1
            if b"421 " in state["said"]:
                self.closed_with_421 += 1
            if self.reconnect_delay >= 0:
                self.pending.append((time.time() + self.reconnect_delay, state["kind"]))

    def trickle(self):
        for key in list(self.selector.get_map().values()):
            state = key.data
            if state["kind"] != "trickle" or not state["greeted"]:
                continue
            try:
                if not state["started"]:
                    key.fileobj.send(PREAMBLE)
                    state["started"] = True
                else:
                    key.fileobj.send(b"x")
            except OSError:
                pass


def read_reply(sock, deadline):
    """Reads one (possibly multi-line) reply; returns its code or None."""
    buffer = b""
    while time.time() < deadline:
        sock.settimeout(max(0.01, deadline - time.time()))
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            return None
        except OSError:
            return None
        if not chunk:
            return None
        buffer += chunk
        lines = buffer.split(b"\r\n")
        for line in lines[:-1]:
            if len(line) >= 4 and line[3:4] == b" ":
                return int(line[:3])
    return None


def probe(port, timeout):
    """One real client: (seconds to greeting, seconds to the reply to the
    final dot, that reply's code); None where it did not happen."""
    start = time.time()
    deadline = start + timeout
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError:
        return None, None, None
    with sock:
        if read_reply(sock, deadline) != 220:
            return None, None, None
        greeted = time.time() - start
        for command, expected in ((b"EHLO probe.test", 250),
                                  (b"MAIL FROM:<probe@sender.test>", 250),
                                  (b"RCPT TO:<user@dest.test>", 250),
                                  (b"DATA", 354)):
            sock.sendall(command + b"\r\n")
            code = read_reply(sock, deadline)
            if code != expected:
                return greeted, None, code
        sock.sendall(b"Subject: probe\r\n\r\nunder pressure\r\n.\r\n")
        code = read_reply(sock, deadline)
        done = time.time() - start if code is not None else None
        try:
            sock.sendall(b"QUIT\r\n")
        except OSError:
            pass
        return greeted, done, code


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-conn", type=int, default=100)
    parser.add_argument("--waiting", type=int, default=50)
    parser.add_argument("--probes", type=int, default=5)
    parser.add_argument("--gap", type=float, default=2.0)
    parser.add_argument("--probe-timeout", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--reconnect-delay", type=float, default=0.2,
                        help="negative: closed attackers do not come back")
    args = parser.parse_args()

    attack = Attack(args.port, args.reconnect_delay)
    for index in range(args.max_conn):
        attack.open("idle" if index % 2 == 0 else "trickle")
    total = args.warmup + args.probes * (args.gap + args.probe_timeout) + 30
    runner = threading.Thread(target=attack.run, args=(time.time() + total,))
    runner.start()

    # Wait (bounded) until every attacker is greeted, then let them idle.
    until = time.time() + 30
    while attack.greeted < args.max_conn and time.time() < until:
        time.sleep(0.05)
    held = attack.greeted
    time.sleep(args.warmup)
    with attack.lock:
        attack.pending.extend((0, "idle") for _ in range(args.waiting))
    time.sleep(0.5)

    greetings, totals, accepted = [], [], 0
    for number in range(1, args.probes + 1):
        greeted, done, code = probe(args.port, args.probe_timeout)
        fmt = lambda value: "NA" if value is None else f"{value:.3f}"
        print(f"probe {number}: greeting_s={fmt(greeted)} message_s={fmt(done)} "
              f"final_reply={code if code is not None else 'NA'}", flush=True)
        if greeted is not None:
            greetings.append(greeted)
        if code == 250:
            accepted += 1
            totals.append(done)
        time.sleep(args.gap)
    attack.stop.set()
    runner.join(timeout=10)

    def stat(values, function):
        return f"{function(values):.3f}" if values else "NA"

    print(f"summary: probes={args.probes} greeted={len(greetings)} accepted={accepted} "
          f"greeting_median_s={stat(greetings, statistics.median)} "
          f"greeting_max_s={stat(greetings, max)} "
          f"message_median_s={stat(totals, statistics.median)} "
          f"message_max_s={stat(totals, max)}", flush=True)
    print(f"attackers: held_before_probes={held} connects={attack.connects} "
          f"closed_by_server={attack.closed} closed_with_421={attack.closed_with_421}",
          flush=True)


if __name__ == "__main__":
    main()
