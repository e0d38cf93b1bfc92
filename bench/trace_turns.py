"""Turns of a peer's loop from an ftrace `raw_syscalls` log (bench/ab_trace.sh).

usage: trace_turns.py TRACE ROUND_TRIPS NAME:TID,TID... [NAME:TID,...]

A turn runs from an `epoll_wait` that returned events to the next `epoll_wait`; it is named
by the calls it made (`!` after a call that failed, such as a read hearing EAGAIN). For each
peer: system calls per round trip, the four commonest turns with their mean length over the
middle 80 %, and the time from a message's read to the tunnel send in the same turn.
"""

import collections
import platform
import re
import statistics
import sys

# x86_64 numbers of the calls a forwarding peer makes; others print as "NR n".
X86_64 = {0: "read", 1: "write", 20: "writev", 44: "sendto", 45: "recvfrom", 46: "sendmsg",
          47: "recvmsg", 232: "epoll_wait", 233: "epoll_ctl", 281: "epoll_pwait",
          299: "recvmmsg", 307: "sendmmsg", 441: "epoll_pwait2"}
NAMES = X86_64 if platform.machine() == "x86_64" else {}
WAITS = {"epoll_wait", "epoll_pwait", "epoll_pwait2"}
READS = {"recvfrom", "recvmsg", "read"}
TUNNEL_SENDS = {"sendmmsg", "sendmsg"}
LINE = re.compile(r"-(\d+)\s+\[\d+\]\s.*?(\d+\.\d+): sys_(enter|exit): NR (\d+)(?: = (-?\d+))?")


def middle_mean(values):
    values = sorted(values)
    cut = len(values) // 10
    return statistics.mean(values[cut:len(values) - cut] or values)


def main():
    path, round_trips, peers = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    peer_of = {}
    for spec in peers:
        name, _, tids = spec.partition(":")
        for tid in tids.replace(",", " ").split():
            peer_of[tid] = name
    events = collections.defaultdict(list)
    with open(path) as trace:
        for line in trace:
            m = LINE.search(line)
            if m and m.group(1) in peer_of:
                tid, ts, kind, nr, ret = m.groups()
                name = NAMES.get(int(nr), f"NR {nr}")
                events[peer_of[tid]].append((float(ts) * 1e6, kind, name, int(ret or 0)))
    for peer in dict.fromkeys(peer_of.values()):
        evs = events.get(peer, [])
        calls = sum(1 for e in evs if e[1] == "exit")
        turns = collections.defaultdict(list)
        read_to_send = []
        i = 0
        while i < len(evs):
            ts, kind, name, ret = evs[i]
            if not (kind == "exit" and name in WAITS and ret > 0):
                i += 1
                continue
            made, read_at, j = [], None, i + 1
            while j < len(evs) and not (evs[j][1] == "enter" and evs[j][2] in WAITS):
                t2, k2, n2, r2 = evs[j]
                if k2 == "exit":
                    made.append(n2 + ("!" if r2 < 0 else ""))
                    if n2 in READS and r2 > 0 and read_at is None:
                        read_at = t2
                elif n2 in TUNNEL_SENDS and read_at is not None:
                    read_to_send.append(t2 - read_at)
                    read_at = None
                j += 1
            if j < len(evs):
                turns[" ".join(made)].append(evs[j][0] - ts)
            i = j
        print(f"  {peer}: {calls / round_trips:.2f} system calls per round trip")
        for made, lengths in sorted(turns.items(), key=lambda kv: -len(kv[1]))[:4]:
            print(f"    {len(lengths):6d} turns, {middle_mean(lengths):6.2f} µs: {made or '(nothing)'}")
        if read_to_send:
            print(f"    read of a message to the tunnel send: {middle_mean(read_to_send):.2f} µs "
                  f"({len(read_to_send)} times)")


if __name__ == "__main__":
    main()
