#!/usr/bin/env python3
"""wgflood: send malformed and forged WireGuard datagrams to a WireGuard port, then listen for replies.

A WireGuard peer must never answer a datagram it cannot authenticate ("Silence is a Virtue",
whitepaper section 5.1). This tool sends, from one UDP socket, a bounded mix of:

  random        random bytes, 0..1500 bytes, and a few oversized ones (up to 64 KiB, fragmented)
  truncated     a type 1/2/3/4 header followed by fewer bytes than that message needs
  reserved      types 1..4 at their exact sizes but with non-zero reserved bytes
  unknown_type  the exact sizes of real messages with a type byte outside 1..4
  init_badmac   handshake initiations (type 1, 148 bytes) with random content and a wrong mac1
  resp_badmac   handshake responses (type 2, 92 bytes) with random content and a wrong mac1
  cookie        cookie replies (type 3, 64 bytes) to receiver indexes nobody gave out
  data          transport data (type 4, 32..1456 bytes) to receiver indexes nobody gave out
  init_mac1     handshake initiations with a CORRECT mac1 for the target's public key, so they
                pass the cheap gate and reach the handshake code (then fail: the static key is
                random). Paced (--mac1-rate) below WireGuard's under-load threshold, where a cookie
                reply would be the correct answer.
  resp_mac1     handshake responses with a correct mac1 and unknown receiver indexes (also paced)

and records every datagram that comes back. mac1 = BLAKE2s-128 keyed with
BLAKE2s-256("mac1----" || responder's public key), over the message up to the mac1 field.

Stdlib only. The count and the time are bounded. Prints a summary; with --expect-silence the exit
status is 1 if anything came back. Exit status 2 means a usage error.
"""

import argparse
import base64
import hashlib
import random
import select
import socket
import sys
import time

SIZES = {1: 148, 2: 92, 3: 64, 4: 32}  # type 4: 16-byte header + 16-byte tag, empty payload


def mac1_key(public_key: bytes) -> bytes:
    return hashlib.blake2s(b"mac1----" + public_key).digest()


def mac1(key: bytes, msg: bytes) -> bytes:
    return hashlib.blake2s(msg, key=key, digest_size=16).digest()


class Forger:
    def __init__(self, rng: random.Random, public_key: bytes | None):
        self.rng = rng
        self.key = mac1_key(public_key) if public_key else None

    def rand(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def header(self, typ: int) -> bytes:
        return bytes([typ, 0, 0, 0])

    def random(self) -> bytes:
        r = self.rng.random()
        if r < 0.01:
            size = self.rng.choice([1501, 2048, 4096, 8192, 16384, 65507])
        elif r < 0.03:
            size = self.rng.choice([0, 1, 2, 3, 4])
        else:
            size = self.rng.randint(0, 1500)
        return self.rand(size)

    def truncated(self) -> bytes:
        typ = self.rng.randint(1, 4)
        return self.header(typ) + self.rand(self.rng.randint(0, SIZES[typ] - 5))

    def reserved(self) -> bytes:
        typ = self.rng.randint(1, 4)
        reserved = self.rand(3)
        if reserved == b"\0\0\0":
            reserved = b"\0\0\1"
        return bytes([typ]) + reserved + self.rand(SIZES[typ] - 4)

    def unknown_type(self) -> bytes:
        typ = self.rng.choice([0, 5, 6, 0x7F, 0x80, 0xFF])
        size = self.rng.choice([32, 64, 92, 148, 1452])
        return bytes([typ, 0, 0, 0]) + self.rand(size - 4)

    def init_badmac(self) -> bytes:
        return self.header(1) + self.rand(144)

    def resp_badmac(self) -> bytes:
        return self.header(2) + self.rand(88)

    def cookie(self) -> bytes:
        return self.header(3) + self.rand(60)

    def data(self) -> bytes:
        payload = 16 * self.rng.randint(0, 89)  # padded to 16 like real packets, up to 1424
        return self.header(4) + self.rand(12 + payload + 16)

    def with_mac1(self, typ: int) -> bytes:
        # type 1: sender(4) ephemeral(32) encrypted static(48) encrypted timestamp(28) = 116 bytes
        # type 2: sender(4) receiver(4) ephemeral(32) encrypted nothing(16) = 60 bytes
        body = self.header(typ) + self.rand(SIZES[typ] - 4 - 32)
        return body + mac1(self.key, body) + bytes(16)

    def init_mac1(self) -> bytes:
        return self.with_mac1(1)

    def resp_mac1(self) -> bytes:
        return self.with_mac1(2)


BULK = ["random", "truncated", "reserved", "unknown_type", "init_badmac", "resp_badmac", "cookie", "data"]
WEIGHTS = [30, 15, 5, 5, 15, 10, 5, 15]


def parse_target(s: str):
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {s!r}")
    return host.strip("[]"), int(port)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", type=parse_target, required=True, help="HOST:PORT of the WireGuard socket")
    ap.add_argument("--public-key", help="the target's public key (base64): enables the correct-mac1 messages")
    ap.add_argument("--count", type=int, default=20000, help="bulk datagrams to send (default 20000)")
    ap.add_argument("--duration", type=float, default=20.0, help="stop sending after this many seconds (default 20)")
    ap.add_argument("--mac1-count", type=int, default=24, help="correct-mac1 messages to send (default 24)")
    ap.add_argument("--mac1-rate", type=float, default=4.0, help="correct-mac1 messages per second (default 4)")
    ap.add_argument("--pps", type=float, default=0, help="bulk rate limit in datagrams/s (default: as fast as possible)")
    ap.add_argument("--listen", type=float, default=3.0, help="seconds to keep listening after sending (default 3)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--expect-silence", action="store_true", help="exit 1 if any datagram comes back")
    args = ap.parse_args()

    if args.count < 0 or args.duration <= 0 or args.listen < 0 or args.mac1_rate <= 0:
        ap.error("counts and times must be positive")
    if args.duration > 600 or args.count > 10_000_000:
        ap.error("refusing an unbounded flood: --duration <= 600 and --count <= 10000000")

    public_key = None
    if args.public_key:
        try:
            public_key = base64.b64decode(args.public_key, validate=True)
        except ValueError:
            public_key = b""
        if len(public_key) != 32:
            ap.error("--public-key must be 32 bytes of base64")
    mac1_count = args.mac1_count if public_key else 0

    rng = random.Random(args.seed)
    forge = Forger(rng, public_key)
    host, port = args.target
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
    sock.setblocking(False)
    dest = (host, port)

    sent = {name: 0 for name in BULK + ["init_mac1", "resp_mac1"]}
    send_errors = 0
    replies = []

    def drain():
        while True:
            try:
                data, src = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. ICMP port unreachable surfaced as ECONNREFUSED
                replies.append((time.monotonic(), -1, f"socket error: {e}"))
                continue
            replies.append((time.monotonic(), len(data), f"{src} type={data[0] if data else None} len={len(data)}"))

    def send(kind: str, pkt: bytes) -> None:
        nonlocal send_errors
        for _ in range(50):
            try:
                sock.sendto(pkt, dest)
                sent[kind] += 1
                return
            except (BlockingIOError, InterruptedError):
                select.select([], [sock], [], 0.01)
            except OSError as e:
                if e.errno in (105, 11):  # ENOBUFS, EAGAIN: the queue is full, wait a little
                    time.sleep(0.001)
                    continue
                send_errors += 1
                return
        send_errors += 1

    t0 = time.monotonic()
    deadline = t0 + args.duration
    mac1_interval = 1.0 / args.mac1_rate
    next_mac1 = t0
    mac1_sent = 0
    bulk_sent = 0
    # Spread correct-mac1 messages over the run; keep the bulk going in between.
    while time.monotonic() < deadline and (bulk_sent < args.count or mac1_sent < mac1_count):
        now = time.monotonic()
        if mac1_sent < mac1_count and now >= next_mac1:
            kind = "init_mac1" if mac1_sent % 3 != 2 else "resp_mac1"
            send(kind, getattr(forge, kind)())
            mac1_sent += 1
            next_mac1 += mac1_interval
        if bulk_sent < args.count:
            kind = rng.choices(BULK, WEIGHTS)[0]
            send(kind, getattr(forge, kind)())
            bulk_sent += 1
            if args.pps > 0:
                pause = t0 + bulk_sent / args.pps - time.monotonic()
                if pause > 0:
                    time.sleep(min(pause, 0.1))
        else:
            time.sleep(min(max(next_mac1 - time.monotonic(), 0), 0.1))
        if bulk_sent % 256 == 0:
            drain()
    sending = time.monotonic() - t0

    listen_until = time.monotonic() + args.listen
    while True:
        left = listen_until - time.monotonic()
        if left <= 0:
            break
        select.select([sock], [], [], left)
        drain()

    total = sum(sent.values())
    detail = ", ".join(f"{k}={v}" for k, v in sent.items() if v)
    print(f"wgflood: sent {total} datagrams to {host}:{port} in {sending:.1f} s ({detail}); send errors: {send_errors}")
    if mac1_count and mac1_sent < mac1_count:
        print(f"wgflood: only {mac1_sent} of {mac1_count} correct-mac1 messages fit in --duration")
    print(f"wgflood: listened {args.listen:.1f} s more; replies: {len(replies)}")
    for when, _size, what in replies[:20]:
        print(f"wgflood:   reply at +{when - t0:.2f} s: {what}")
    if args.expect_silence and replies:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
