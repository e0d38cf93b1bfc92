#!/usr/bin/env python3
"""TCP clients of an echo service (e.g. `socat ... PIPE`) for the netns stories.

    echo_client.py once   HOST PORT [--bind IP] [--wait SECONDS]
        One connection, one line. Prints what happened and exits:
          0  echoed          "echoed after N ms"
          3  refused         the connection was closed (or reset, or refused) without an echo
          4  silent          connected, but neither echo nor close within --wait

    echo_client.py urgent HOST PORT [--count N] [--wait SECONDS]
        N connections (default 1), each sending "before", one byte of TCP urgent data and
        "after\n" back to back, as telnet does for an interrupt. Exits 0 if every echo is
        "beforeafter\n" (the urgent byte is dropped by readers without SO_OOBINLINE), 4 when
        one stalls (the bytes after the urgent byte never came) and 3 when one is cut short.

    echo_client.py hold   HOST PORT --count N --state FILE
        Opens N connections and checks each echoes a line, writes "held=N" to FILE, then holds
        them open (sending nothing) until SIGTERM. Exits 0 if all N stayed open to the end.

    echo_client.py steady HOST PORT --state FILE [--every SECONDS] [--wait SECONDS]
        One long-lived connection: a numbered line every --every seconds (default 0.2), each echo
        checked byte for byte within --wait seconds (default 2). FILE always holds the latest
        "sent=N echoed=N max_rtt_ms=X errors=N". Runs until SIGTERM, then exits 0 only if every
        line came back; a missed, wrong or late echo, or a closed connection, ends it at once
        with exit 1 and the reason.
"""
import argparse
import os
import signal
import socket
import sys
import time

stopping = False


def on_term(_sig, _frame):
    global stopping
    stopping = True


def write_state(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


def read_line(s: socket.socket, deadline: float) -> bytes:
    """Reads up to and including b"\\n"; b"" on EOF; raises TimeoutError after the deadline."""
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete echo before the deadline (have {buf!r})")
        s.settimeout(left)
        try:
            chunk = s.recv(4096)
        except socket.timeout:
            raise TimeoutError(f"no complete echo before the deadline (have {buf!r})")
        if not chunk:
            return buf
        buf += chunk
    return buf


def once(a) -> int:
    start = time.monotonic()
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if a.bind:
            s.bind((a.bind, 0))
        s.settimeout(a.wait)
        s.connect((a.host, a.port))
        s.sendall(b"are you there?\n")
        got = read_line(s, start + a.wait)
    except TimeoutError:
        print(f"silent: no echo and no close within {a.wait}s")
        return 4
    except (ConnectionResetError, ConnectionRefusedError, BrokenPipeError) as e:
        print(f"refused: {type(e).__name__} after {(time.monotonic() - start) * 1000:.0f} ms")
        return 3
    ms = (time.monotonic() - start) * 1000
    if got == b"are you there?\n":
        print(f"echoed after {ms:.0f} ms")
        return 0
    print(f"refused: closed after {ms:.0f} ms without an echo (got {got!r})")
    return 3


def urgent(a) -> int:
    for i in range(a.count):
        start = time.monotonic()
        try:
            s = socket.create_connection((a.host, a.port), timeout=a.wait)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(b"before")
            s.send(b"!", socket.MSG_OOB)
            s.sendall(b"after\n")
            got = read_line(s, start + a.wait)
            s.close()
        except TimeoutError as e:
            print(f"silent: connection {i + 1} of {a.count}: {e}")
            return 4
        except OSError as e:
            print(f"refused: connection {i + 1} of {a.count}: {type(e).__name__}: {e}")
            return 3
        if got != b"beforeafter\n":
            print(f"refused: connection {i + 1} of {a.count} echoed {got!r}")
            return 3
    print(f"{a.count} echoes passed their urgent byte")
    return 0


def hold(a) -> int:
    conns = []
    for i in range(a.count):
        s = socket.create_connection((a.host, a.port), timeout=5)
        line = f"held connection {i}\n".encode()
        s.sendall(line)
        got = read_line(s, time.monotonic() + 5)
        if got != line:
            print(f"held connection {i}: expected an echo, got {got!r}", flush=True)
            return 1
        conns.append(s)
    write_state(a.state, f"held={len(conns)}")
    print(f"holding {len(conns)} connections", flush=True)
    while not stopping:
        time.sleep(0.1)
    # Still open? A closed one would read EOF now without blocking.
    lost = 0
    for i, s in enumerate(conns):
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                lost += 1
                print(f"held connection {i} was closed while held", flush=True)
        except BlockingIOError:
            pass
        except OSError as e:
            lost += 1
            print(f"held connection {i}: {e}", flush=True)
        s.close()
    print(f"released {len(conns)} connections, {lost} lost while held", flush=True)
    return 0 if lost == 0 else 1


def steady(a) -> int:
    s = socket.create_connection((a.host, a.port), timeout=5)
    sent = echoed = 0
    max_rtt = 0.0
    def state(err: str = "") -> None:
        write_state(a.state, f"sent={sent} echoed={echoed} max_rtt_ms={max_rtt * 1000:.1f} errors={1 if err else 0}"
                    + (f" error={err!r}" if err else ""))
    state()
    next_at = time.monotonic()
    while not stopping:
        line = f"line {sent} {time.time():.3f}\n".encode()
        t = time.monotonic()
        try:
            s.sendall(line)
            sent += 1
            got = read_line(s, t + a.wait)
        except (TimeoutError, OSError) as e:
            state(f"line {sent - 1}: {e}")
            print(f"FAILED at line {sent - 1}: {e}", flush=True)
            return 1
        if got != line:
            why = f"line {sent - 1}: expected {line!r}, got {got!r}" if got else f"line {sent - 1}: connection closed"
            state(why)
            print(f"FAILED: {why}", flush=True)
            return 1
        echoed += 1
        max_rtt = max(max_rtt, time.monotonic() - t)
        state()
        next_at += a.every
        time.sleep(max(0.0, next_at - time.monotonic()))
    s.close()
    print(f"sent={sent} echoed={echoed} max_rtt_ms={max_rtt * 1000:.1f}", flush=True)
    return 0 if sent == echoed else 1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["once", "urgent", "hold", "steady"])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--bind")
    ap.add_argument("--wait", type=float, default=3.0)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--state")
    ap.add_argument("--every", type=float, default=0.2)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    if a.mode in ("hold", "steady") and not a.state:
        ap.error(f"{a.mode} needs --state FILE")
    return {"once": once, "urgent": urgent, "hold": hold, "steady": steady}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
