#!/usr/bin/env python3
"""Runs a command and writes what it read and wrote to a file, from /proc/PID/io (the whole
process, its threads included), read once it has exited and before it is reaped.

usage: io_of.py OUT COMMAND...
OUT gets one line: `rchar read_bytes wchar write_bytes`. rchar counts the bytes of every file
read() (page cache included; socket receives, i.e. the snapshot download, are not counted);
read_bytes what came from the disk. The command's exit status is passed on.
"""
import os
import subprocess
import sys

out, cmd = sys.argv[1], sys.argv[2:]
child = subprocess.Popen(cmd)
os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
fields = {}
with open(f"/proc/{child.pid}/io") as io:
    for line in io:
        key, value = line.split(":")
        fields[key] = int(value)
with open(out, "w") as f:
    print(fields["rchar"], fields["read_bytes"], fields["wchar"], fields["write_bytes"], file=f)
sys.exit(child.wait())
