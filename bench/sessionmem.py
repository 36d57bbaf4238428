#!/usr/bin/python3
"""Holds N SMTP sessions open on a server and prints how much its resident
memory grew per session: after EHLO ("idle"), or in the middle of DATA
("data", 500 body bytes sent and no end). Loopback only; run by
bench/sessionmem.sh.

    sessionmem.py PORT N PID idle|data
"""
import socket
import sys
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


def expect(f, code):
    while True:
        line = f.readline()
        if not line.startswith(code):
            raise SystemExit(f"want {code}, got {line!r}")
        if line[3:4] == b" ":
            return


def main():
    port, n, pid, stage = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    before = rss_kb(pid)
    held = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        f = s.makefile("rb")
        expect(f, b"220")
        s.sendall(b"EHLO client.example\r\n")
        expect(f, b"250")
        if stage == "data":
            for cmd, code in ((b"MAIL FROM:<a@client.example>", b"250"), (b"RCPT TO:<b@bench.example>", b"250"),
                              (b"DATA", b"354")):
                s.sendall(cmd + b"\r\n")
                expect(f, code)
            s.sendall(b"Subject: held\r\n\r\n" + b"y" * 500 + b"\r\n")
        held.append((s, f))
    time.sleep(1)  # let the server read what was sent
    after = rss_kb(pid)
    print(f"{stage} {n} {before} {after} {(after - before) / n:.1f}")
    for s, _ in held:
        s.close()


main()
