#!/usr/bin/env python3
"""A stand-in for systemd's notification socket (sd_notify(3)).

    notify-sink.py SOCKET OUT

Binds a Unix datagram socket at SOCKET and appends every message received
to OUT, one line per message with its fields joined by spaces, until
killed."""
import os
import socket
import sys

path, out = sys.argv[1], sys.argv[2]
if os.path.exists(path):
    os.unlink(path)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
with open(out, "a", buffering=1) as f:
    while True:
        msg = s.recv(4096).decode(errors="replace")
        f.write(" ".join(msg.split("\n")).strip() + "\n")
