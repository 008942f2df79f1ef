#!/usr/bin/env python3
"""CPU-time snapshots of a process tree, from /proc (stdlib only).

  proc_cpu.py snap ROOT_PID        -> JSON snapshot on stdout
  proc_cpu.py diff BEFORE AFTER    -> "TOTAL_TICKS name=ticks ..." (JSON files)

A snapshot covers ROOT_PID and all its live descendants. For every live
process it records utime+stime (all threads) and cutime+cstime (children that
exited and were reaped by it). Summing both over the live tree is conserved
when processes come and go: a child that exits moves its time (and that of its
own reaped children) into its parent's cutime/cstime. So

    total(after) - total(before)

is the CPU the whole tree used in between, including short-lived children
such as Postfix smtpd/cleanup/smtp processes that exited meanwhile.

Per-name figures (by comm) are deltas of live processes only, plus a
"(reaped)" bucket holding the time of children that exited in between; a
process that was alive in BEFORE and gone in AFTER makes its name's delta
smaller by what it had used before (its full time is in "(reaped)").

Ticks are clock ticks (getconf CLK_TCK, usually 100 per second).
"""

import json
import os
import sys


def read_stat(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("latin1")
    except OSError:
        return None
    # comm may contain spaces and parentheses: split at the last ')'.
    lp = data.index("(")
    rp = data.rindex(")")
    comm = data[lp + 1 : rp]
    rest = data[rp + 2 :].split()
    # rest[0] = state (field 3); field n is rest[n-3]
    ppid = int(rest[1])
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    starttime = int(rest[19])
    return {
        "pid": pid,
        "ppid": ppid,
        "comm": comm,
        "self": utime + stime,
        "children": cutime + cstime,
        "start": starttime,
    }


def snap(root):
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st is not None:
                procs[st["pid"]] = st
    if root not in procs:
        return {"root": root, "alive": False, "total": None, "procs": []}
    kids = {}
    for st in procs.values():
        kids.setdefault(st["ppid"], []).append(st["pid"])
    tree = []
    stack = [root]
    seen = set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        tree.append(procs[pid])
        stack.extend(kids.get(pid, []))
    total = sum(p["self"] + p["children"] for p in tree)
    return {"root": root, "alive": True, "total": total, "procs": tree}


def diff(a, b):
    if not a.get("alive") or not b.get("alive"):
        return None, {}
    by = {}
    for p in b["procs"]:
        by[p["comm"]] = by.get(p["comm"], 0) + p["self"]
    for p in a["procs"]:
        by[p["comm"]] = by.get(p["comm"], 0) - p["self"]
    reaped = sum(p["children"] for p in b["procs"]) - sum(p["children"] for p in a["procs"])
    if reaped:
        by["(reaped)"] = reaped
    by = {k: v for k, v in by.items() if v}
    return b["total"] - a["total"], by


def main(argv):
    if len(argv) == 3 and argv[1] == "snap":
        print(json.dumps(snap(int(argv[2]))))
        return 0
    if len(argv) == 4 and argv[1] == "diff":
        with open(argv[2]) as f:
            a = json.load(f)
        with open(argv[3]) as f:
            b = json.load(f)
        total, by = diff(a, b)
        if total is None:
            print("NA")
            return 1
        parts = " ".join(f"{k}={v}" for k, v in sorted(by.items(), key=lambda kv: -kv[1]))
        print(f"{total} {parts}".rstrip())
        return 0
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv))
