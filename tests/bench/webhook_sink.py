#!/usr/bin/env python3
"""A webhook receiver for benchmarks: answers every POST with 200 at once
(or, with --down-file F, 503 while F exists), counts the events it took and
checks their order, and prints a summary on SIGTERM or at --report.

Checks, per relayq queue id, that an event's type never goes back in the
life of a message (accepted < deferred* < delivered|bounced|expired), and
counts distinct event ids, so a run can prove "every event arrived, in
order, none lost" by comparing with what relayq committed.

Usage: webhook_sink.py --port P [--down-file F] [--report FILE]
"""
import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RANK = {"accepted": 0, "deferred": 1, "delayed": 1, "delivered": 2, "bounced": 2,
        "expired": 2, "deleted": 2, "suppressed": 2, "test": 0}

lock = threading.Lock()
state = {"posts": 0, "refused": 0, "events": 0, "ids": set(), "dupes": 0,
         "order_errors": 0, "last_rank": {}, "first": None, "last": None, "types": {}}


def make_handler(down_file):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if down_file and os.path.exists(down_file):
                with lock:
                    state["refused"] += 1
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            events = json.loads(body)["events"]
            now = time.monotonic()
            with lock:
                state["posts"] += 1
                state["first"] = state["first"] or now
                state["last"] = now
                for event in events:
                    state["events"] += 1
                    state["types"][event["type"]] = state["types"].get(event["type"], 0) + 1
                    if event["id"] in state["ids"]:
                        state["dupes"] += 1
                        continue
                    state["ids"].add(event["id"])
                    key = (event.get("queue_id"), event.get("recipient"))
                    rank = RANK.get(event["type"], 0)
                    if rank < state["last_rank"].get(key, -1):
                        state["order_errors"] += 1
                    state["last_rank"][key] = rank
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
    return Handler


def summary():
    with lock:
        span = (state["last"] - state["first"]) if state["first"] else 0
        return {"posts": state["posts"], "refused": state["refused"], "events": state["events"],
                "distinct": len(state["ids"]), "duplicates": state["dupes"],
                "order_errors": state["order_errors"], "types": state["types"],
                "seconds_first_to_last": round(span, 3)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--down-file")
    parser.add_argument("--report")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args.down_file))

    def stop(*_):
        threading.Thread(target=server.shutdown).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGUSR1, lambda *_: report(args.report))
    server.serve_forever()
    report(args.report)


def report(path):
    text = json.dumps(summary())
    if path:
        with open(path, "w") as out:
            out.write(text + "\n")
    else:
        print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
