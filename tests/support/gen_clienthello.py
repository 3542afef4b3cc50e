#!/usr/bin/env python3
"""Regenerates tests/data/clienthello/: real ClientHellos captured from curl, gnutls-cli and
openssl s_client on loopback, plus a large one derived from a real hello that spans several TLS
records. Usage: tests/support/gen_clienthello.py [OUTDIR]. Every file name is <source>.bin and
every hello carries SNI app.example.test."""

import os
import socket
import struct
import subprocess
import sys
import threading

SNI = "app.example.test"


def read_hello(conn):
    """Reads records until the whole first handshake message is in; returns the raw bytes."""
    data = b""
    conn.settimeout(10)

    def need(n):
        nonlocal data
        while len(data) < n:
            chunk = conn.recv(65536)
            if not chunk:
                raise EOFError("client closed early")
            data += chunk

    hs = b""
    off = 0
    while True:
        need(off + 5)
        length = struct.unpack(">H", data[off + 3:off + 5])[0]
        need(off + 5 + length)
        hs += data[off + 5:off + 5 + length]
        off += 5 + length
        if len(hs) >= 4 and len(hs) >= 4 + int.from_bytes(hs[1:4], "big"):
            return data[:off]


def capture(name, argv_for_port, outdir):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    result = {}

    def serve():
        conn, _ = srv.accept()
        try:
            result["hello"] = read_hello(conn)
        finally:
            conn.close()

    t = threading.Thread(target=serve)
    t.start()
    subprocess.run(argv_for_port(port), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=20, check=False)
    t.join(15)
    srv.close()
    hello = result["hello"]
    with open(os.path.join(outdir, name + ".bin"), "wb") as f:
        f.write(hello)
    return hello


def enlarge(hello, extra_shares, record_size):
    """Adds `extra_shares` 1216-byte key_share entries (the size of an X25519MLKEM768 share) to
    a single-record ClientHello and re-fragments the handshake into records of `record_size`."""
    assert hello[0] == 22
    hs = hello[5:5 + struct.unpack(">H", hello[3:5])[0]]
    body = hs[4:]
    p = 2 + 32
    p += 1 + body[p]
    p += 2 + struct.unpack(">H", body[p:p + 2])[0]
    p += 1 + body[p]
    ext_start = p + 2
    exts = body[ext_start:]
    out = b""
    q = 0
    found = False
    while q < len(exts):
        etype, elen = struct.unpack(">HH", exts[q:q + 4])
        edata = exts[q + 4:q + 4 + elen]
        if etype == 51:  # key_share: client_shares<0..2^16-1>
            shares = edata[2:]
            for i in range(extra_shares):
                group = 0x2A00 + i  # private-use-looking groups the server would ignore
                shares += struct.pack(">HH", group, 1216) + bytes((i * 7 + j) % 251 for j in range(1216))
            edata = struct.pack(">H", len(shares)) + shares
            found = True
        out += struct.pack(">HH", etype, len(edata)) + edata
        q += 4 + elen
    assert found, "no key_share extension to enlarge"
    body = body[:p] + struct.pack(">H", len(out)) + out
    hs = bytes([1]) + len(body).to_bytes(3, "big") + body
    records = b""
    for i in range(0, len(hs), record_size):
        frag = hs[i:i + record_size]
        records += bytes([22, 3, 1]) + struct.pack(">H", len(frag)) + frag
    return records


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "data", "clienthello")
    os.makedirs(outdir, exist_ok=True)
    capture("curl", lambda port: ["curl", "-sk", "--max-time", "3", "--resolve",
                                  f"{SNI}:{port}:127.0.0.1", f"https://{SNI}:{port}/"], outdir)
    capture("gnutls-cli", lambda port: ["gnutls-cli", "--insecure", "-p", str(port),
                                        "--sni-hostname", SNI, "127.0.0.1"], outdir)
    openssl = capture("openssl", lambda port: ["openssl", "s_client", "-connect",
                                              f"127.0.0.1:{port}", "-servername", SNI], outdir)
    big = enlarge(openssl, extra_shares=8, record_size=1000)
    with open(os.path.join(outdir, "large-multirecord.bin"), "wb") as f:
        f.write(big)


if __name__ == "__main__":
    main()
