#!/usr/bin/env python3
"""Ask a SOCKS5 server (RFC 1928) for one CONNECT and report its reply code, byte for byte.

    socks5_probe.py PROXY_HOST PROXY_PORT DEST_HOST DEST_PORT [--http PATH] [--timeout SECONDS]

DEST_HOST is sent as an IPv4 or IPv6 address when it is one, else as a domain name (resolved
by the server, never here). Prints

    reply=0xNN (meaning) after=<milliseconds from the request to the reply>

and with --http, after a successful CONNECT, sends `GET PATH` and prints the response body on the
following lines. Exits 0 when the server answered (whatever the code), 1 when it did not answer
a well-formed SOCKS5 reply within --timeout.
"""
import argparse
import ipaddress
import socket
import struct
import sys
import time

MEANING = {
    0: "succeeded",
    1: "general failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"the server closed the connection after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("proxy_host")
    ap.add_argument("proxy_port", type=int)
    ap.add_argument("dest_host")
    ap.add_argument("dest_port", type=int)
    ap.add_argument("--http", metavar="PATH")
    ap.add_argument("--timeout", type=float, default=10.0)
    a = ap.parse_args()

    try:
        s = socket.create_connection((a.proxy_host, a.proxy_port), timeout=a.timeout)
        s.sendall(b"\x05\x01\x00")  # version 5, one method: no authentication
        ver, method = recv_exact(s, 2)
        if ver != 5 or method != 0:
            print(f"no-auth refused by the server: version {ver}, method {method:#04x}")
            return 1
        try:
            ip = ipaddress.ip_address(a.dest_host)
            addr = (b"\x01" if ip.version == 4 else b"\x04") + ip.packed
        except ValueError:
            name = a.dest_host.encode()
            addr = b"\x03" + bytes([len(name)]) + name
        sent = time.monotonic()
        s.sendall(b"\x05\x01\x00" + addr + struct.pack("!H", a.dest_port))
        ver, rep, _rsv, atyp = recv_exact(s, 4)
        after = (time.monotonic() - sent) * 1000
        if ver != 5:
            print(f"bad reply version {ver}")
            return 1
        # The bound address that follows; read it so the stream is at the payload.
        if atyp == 1:
            recv_exact(s, 4 + 2)
        elif atyp == 4:
            recv_exact(s, 16 + 2)
        elif atyp == 3:
            recv_exact(s, recv_exact(s, 1)[0] + 2)
        print(f"reply={rep:#04x} ({MEANING.get(rep, 'unassigned')}) after={after:.0f}ms", flush=True)
        if rep == 0 and a.http is not None:
            host = f"[{a.dest_host}]" if ":" in a.dest_host else a.dest_host
            host = host if a.dest_port == 80 else f"{host}:{a.dest_port}"
            s.sendall(f"GET {a.http} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            resp = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                resp += chunk
            _head, _, body = resp.partition(b"\r\n\r\n")
            sys.stdout.write(body.decode(errors="replace"))
        s.close()
        return 0
    except (OSError, ConnectionError) as e:
        print(f"no SOCKS5 reply: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
