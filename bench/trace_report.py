"""What an ftrace log of round trips shows (bench/ab_trace.sh).

usage: trace_report.py syscalls|wakeups TRACE ROUND_TRIPS NAME:TID,TID... [NAME:TID,...]

syscalls, from `raw_syscalls` events: a turn runs from an `epoll_wait` that returned events
to the next `epoll_wait`, and is named by the calls it made (`!` after a call that failed,
such as a read hearing EAGAIN). For each peer: system calls per round trip, the four
commonest turns with their mean length over the middle 80 %, and the time from a message's
read to the tunnel send in the same turn.

wakeups, from `sched_waking`, `sched_wakeup` and `sched_switch`: every wake-up of a user
process, by whether it went to another core than the waker's and whether that core was idle
when it was woken, per round trip, with the median time from the wake-up to the process
running; the peers' own (NAME's threads) and everyone's.
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


def syscalls(path, round_trips, peer_of):
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


SWITCH = re.compile(r"\[(\d+)\]\s.*?(\d+\.\d+): sched_switch: .*?next_pid=(\d+)")
WAKE = re.compile(r"\[(\d+)\]\s.*?(\d+\.\d+): sched_(waking|wakeup): comm=(.*?) pid=(\d+) "
                  r".*?target_cpu=(\d+)")
KERNEL_THREADS = ("kworker", "ksoftirqd", "rcu", "migration", "kcompactd", "cpuhp", "watchdog")


def wakeups(path, round_trips, peer_of):
    on_cpu = {}  # CPU -> the pid running there; 0 is the idle task
    waking = {}  # pid -> (waker's CPU, when, the CPUs' pids then)
    woken = {}  # pid -> (when, kind, a peer's?)
    counts = collections.Counter()
    delays = collections.defaultdict(list)
    with open(path) as trace:
        for line in trace:
            m = SWITCH.search(line)
            if m:
                cpu, ts, pid = m.groups()
                on_cpu[int(cpu)] = pid
                if pid in woken:
                    t0, kind, peer = woken.pop(pid)
                    delays[(kind, peer)].append(float(ts) * 1e6 - t0)
                continue
            m = WAKE.search(line)
            if not m or m.group(4).startswith(KERNEL_THREADS):
                continue
            cpu, ts, what, _, pid, target = m.groups()
            if what == "waking":
                waking[pid] = (int(cpu), float(ts) * 1e6, dict(on_cpu))
                continue
            if pid not in waking:
                continue
            waker_cpu, t0, then = waking.pop(pid)
            target = int(target)
            kind = ("another core" if target != waker_cpu else "same core") + (
                ", idle" if then.get(target) == "0" else ", busy")
            peer = pid in peer_of
            counts[(kind, peer)] += 1
            woken[pid] = (t0, kind, peer)
    total = sum(counts.values())
    print(f"  {total / round_trips:.2f} wake-ups per round trip")
    for kind in ("another core, idle", "another core, busy", "same core, idle", "same core, busy"):
        n = counts[(kind, True)] + counts[(kind, False)]
        d = delays[(kind, True)] + delays[(kind, False)]
        if n:
            print(f"    to {kind:18s} {n / round_trips:5.2f} (the peers' {counts[(kind, True)] / round_trips:.2f}),"
                  f" running after {statistics.median(d) if d else float('nan'):5.1f} µs (median)")


def main():
    mode, path, round_trips, peers = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    peer_of = {}
    for spec in peers:
        name, _, tids = spec.partition(":")
        for tid in tids.replace(",", " ").split():
            peer_of[tid] = name
    {"syscalls": syscalls, "wakeups": wakeups}[mode](path, round_trips, peer_of)


if __name__ == "__main__":
    main()
