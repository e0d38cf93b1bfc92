#!/usr/bin/env python3
"""A UDP echo server for the netns stories: the "game server" at home.

    udp_echo.py HOST PORT[-LAST]

Binds every port of the range on HOST and answers each datagram with

    <payload>|port=<the port it arrived on>|from=<sender ip>:<sender port>

so a client can check that the reply is its own (payload), that it came from the port it asked
(port=), and how many distinct senders the server saw (from=: one per session of the forwarder).
Prints one line per new sender, and runs until killed.
"""
import selectors
import socket
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    host, ports = sys.argv[1], sys.argv[2]
    first, _, last = ports.partition("-")
    first_port = int(first)
    last_port = int(last) if last else first_port

    sel = selectors.DefaultSelector()
    for port in range(first_port, last_port + 1):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, port)
    print(f"udp echo on {host}:{ports}", flush=True)

    seen = set()
    while True:
        for key, _ in sel.select():
            sock, port = key.fileobj, key.data
            while True:
                try:
                    data, peer = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                if (port, peer) not in seen:
                    seen.add((port, peer))
                    print(f"new sender {peer[0]}:{peer[1]} on port {port} ({len(seen)} so far)", flush=True)
                reply = data + f"|port={port}|from={peer[0]}:{peer[1]}".encode()
                try:
                    sock.sendto(reply, peer)
                except OSError as e:
                    print(f"sendto {peer}: {e}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
