#!/usr/bin/env python3
"""Many UDP "players" talking to one echo server (udp_echo.py) at once, through a forwarder.

    udp_players.py --host IP --ports PORT[-LAST] [--players N] [--rounds R] [--size BYTES]
                   [--timeout SECONDS]

Each player is its own UDP socket (its own source port, so its own session in the forwarder).
In every round, every player sends one datagram to every port, all at once, then waits for the
replies. A reply must carry the player's own payload byte for byte (no cross-talk between
players, nothing cut short) and come back from the port it was sent to, tagged by the server
with that port. Missing replies are resent every 0.5 s until --timeout per round.

Prints key=value lines (players, players_served, datagrams, replies, resent, crosstalk,
wrong_port, corrupt, server_senders, max_rtt_ms) and exits 0 only when every datagram got its
own reply; with --partial, players that get no reply are only counted (players_served says how
many got all of theirs), for a forwarder that serves a bounded number of sessions.
"""
import argparse
import selectors
import socket
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--ports", required=True)
    ap.add_argument("--players", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=int, default=64, help="payload bytes per datagram")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per round")
    ap.add_argument("--partial", action="store_true", help="count players without replies, do not fail")
    a = ap.parse_args()

    first, _, last = a.ports.partition("-")
    ports = list(range(int(first), int(last or first) + 1))

    sel = selectors.DefaultSelector()
    players = []
    for i in range(a.players):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 0))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
        players.append(s)

    def payload(i: int, r: int, p: int) -> bytes:
        head = f"player={i};round={r};port={p};".encode()
        return head + b"x" * max(0, a.size - len(head))

    stats = dict(datagrams=0, replies=0, resent=0, crosstalk=0, wrong_port=0, corrupt=0, duplicate=0)
    senders = set()
    max_rtt = 0.0
    ok = True
    unserved = set()
    for r in range(a.rounds):
        outstanding = {}  # (player, port) -> (payload, first sent at)
        for i, s in enumerate(players):
            for p in ports:
                data = payload(i, r, p)
                outstanding[(i, p)] = (data, time.monotonic())
                s.sendto(data, (a.host, p))
                stats["datagrams"] += 1
        deadline = time.monotonic() + a.timeout
        next_resend = time.monotonic() + 0.5
        while outstanding and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.1):
                i = key.data
                s = key.fileobj
                while True:
                    try:
                        reply, src = s.recvfrom(65535)
                    except BlockingIOError:
                        break
                    body, sep, tags = reply.partition(b"|port=")
                    if not sep:
                        stats["corrupt"] += 1
                        continue
                    text = body.decode(errors="replace")
                    fields = dict(f.split("=", 1) for f in text.split(";") if "=" in f)
                    try:
                        who, rnd, port = int(fields["player"]), int(fields["round"]), int(fields["port"])
                    except (KeyError, ValueError):
                        stats["corrupt"] += 1
                        continue
                    if who != i:
                        stats["crosstalk"] += 1
                        print(f"cross-talk: player {i} got player {who}'s datagram", flush=True)
                        continue
                    tag_port, _, sender = tags.decode(errors="replace").partition("|from=")
                    if src[1] != port or tag_port != str(port):
                        stats["wrong_port"] += 1
                        print(f"player {i}: reply for port {port} came from {src} tagged {tag_port}", flush=True)
                        continue
                    want = outstanding.get((i, port))
                    if rnd != r or want is None:
                        stats["duplicate"] += 1
                        continue
                    if body != want[0]:
                        stats["corrupt"] += 1
                        print(f"player {i}: payload changed on the way ({len(body)} of {len(want[0])} bytes)", flush=True)
                        continue
                    max_rtt = max(max_rtt, time.monotonic() - want[1])
                    senders.add((port, sender))
                    del outstanding[(i, port)]
                    stats["replies"] += 1
            if outstanding and time.monotonic() >= next_resend:
                for (i, p), (data, _) in outstanding.items():
                    players[i].sendto(data, (a.host, p))
                    stats["resent"] += 1
                next_resend = time.monotonic() + 0.5
        if outstanding and a.partial:
            unserved.update(i for i, _ in outstanding)
        elif outstanding:
            ok = False
            unserved.update(i for i, _ in outstanding)
            missing = sorted(outstanding)[:10]
            print(f"round {r}: {len(outstanding)} datagrams got no reply within {a.timeout}s, e.g. {missing}", flush=True)
            break

    if stats["crosstalk"] or stats["corrupt"] or stats["wrong_port"]:
        ok = False
    print(f"players={a.players}")
    print(f"players_served={a.players - len(unserved)}")
    print(f"ports={len(ports)}")
    for k, v in stats.items():
        print(f"{k}={v}")
    print(f"server_senders={len(senders)}")
    print(f"max_rtt_ms={max_rtt * 1000:.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
