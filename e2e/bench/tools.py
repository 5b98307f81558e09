"""Small helpers of e2e/bench/run.sh that are awkward in shell (run with /usr/bin/python3).

  tools.py json FILE KEY[.KEY...]...   print each key's value (dotted paths into objects,
                                       numeric components index lists), one per line
  tools.py engine-mount FILE           host directory bound at /.rctr-engine in an instance
                                       record FILE
  tools.py frozen-ms DIR               the application freeze time CRIU recorded in
                                       DIR/stats-dump, in milliseconds
  tools.py dir-bytes DIR               total size of the regular files directly in DIR
  tools.py pod-frozen-ms FILE          CRIU's freeze time in the JSON `podman container
                                       checkpoint --print-stats` printed into FILE, in ms
  tools.py free-port                   a TCP port on 127.0.0.1 that is free right now
"""

import json
import os
import socket
import struct
import sys


def die(msg: str) -> None:
    sys.exit(f"tools.py: error: {msg}")


def json_get(path: str, keys: list) -> None:
    with open(path) as f:
        doc = json.load(f)
    for key in keys:
        value = doc
        for part in key.split("."):
            value = value[int(part)] if isinstance(value, list) else value.get(part)
            if value is None:
                die(f"{path} has no {key}")
        print(value if not isinstance(value, (dict, list)) else json.dumps(value))


def engine_mount(path: str) -> None:
    with open(path) as f:
        record = json.load(f)
    for m in record["plan"]["mounts"]:
        if m["dst"] == "/.rctr-engine":
            print(m["source"]["src"])
            return
    die(f"{path}: the instance has no engine mounted at /.rctr-engine (not --ckpt-launch?)")


def varint(buf: bytes, pos: int):
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def fields(buf: bytes):
    """(field number, value) of a protobuf message: ints for varints, bytes otherwise."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        wire = key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 2:
            n, pos = varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        else:
            return
        yield key >> 3, value


def frozen_ms(directory: str) -> None:
    # stats-dump: two magics, a 32-bit length, then StatsEntry { dump = 1: DumpStatsEntry
    # { freezing_time = 1, frozen_time = 2, ... } } with times in microseconds.
    with open(os.path.join(directory, "stats-dump"), "rb") as f:
        data = f.read()
    (length,) = struct.unpack_from("<I", data, 8)
    for num, dump in fields(data[12 : 12 + length]):
        if num == 1 and isinstance(dump, bytes):
            for n, v in fields(dump):
                if n == 2 and isinstance(v, int):
                    print(f"{v / 1000:.1f}")
                    return
    die(f"{directory}/stats-dump holds no frozen time")


def dir_bytes(directory: str) -> None:
    total = 0
    for e in os.scandir(directory):
        if e.is_file(follow_symlinks=False):
            total += e.stat().st_size
    print(total)


def pod_frozen_ms(path: str) -> None:
    with open(path) as f:
        stats = json.load(f)
    try:
        us = stats["container_statistics"][0]["criu_statistics"]["frozen_time"]
    except (KeyError, IndexError, TypeError):
        die(f"{path} holds no criu_statistics.frozen_time")
    print(f"{us / 1000:.3f}")


def free_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def main() -> None:
    args = sys.argv[1:]
    if len(args) >= 3 and args[0] == "json":
        json_get(args[1], args[2:])
    elif len(args) == 2 and args[0] == "engine-mount":
        engine_mount(args[1])
    elif len(args) == 2 and args[0] == "frozen-ms":
        frozen_ms(args[1])
    elif len(args) == 2 and args[0] == "dir-bytes":
        dir_bytes(args[1])
    elif len(args) == 2 and args[0] == "pod-frozen-ms":
        pod_frozen_ms(args[1])
    elif args == ["free-port"]:
        free_port()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
