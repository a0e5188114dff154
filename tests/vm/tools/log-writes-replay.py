#!/usr/bin/env python3
"""Replay a dm-log-writes log onto an image, up to a mark.

dm-log-writes (drivers/md/dm-log-writes.c, Documentation/admin-guide/
device-mapper/log-writes.rst) logs a write only once it is durable: writes
that complete without FUA wait until a later FLUSH completes and are logged
just before that FLUSH; FUA writes are logged on completion. A mark
(`dmsetup message <dev> 0 mark <name>`) is logged at once. So replaying the
log up to a mark rebuilds exactly what a power cut at that moment would have
left on a disk with a volatile write cache.

Log format (little endian): sector 0 holds the super block {magic u64,
version u64, nr_entries u64, sectorsize u32}; then, from byte `sectorsize`,
per entry one `sectorsize` block {sector u64, nr_sectors u64, flags u64,
data_len u64, mark name...} followed (unless it is a discard or a mark) by
nr_sectors * sectorsize bytes of data. sector and nr_sectors count
`sectorsize` units.

    log-writes-replay.py LOG --list
    log-writes-replay.py LOG --replay IMAGE --until-mark NAME
"""

import struct
import sys

MAGIC = 0x6A736677736872
FLUSH, FUA, DISCARD, MARK, METADATA = 1, 2, 4, 8, 16


def entries(log):
    """Yields (sector, nr_sectors, flags, mark or None, data offset in log)."""
    log.seek(0)
    magic, version, nr_entries, sectorsize = struct.unpack("<QQQI", log.read(28))
    if magic != MAGIC:
        raise SystemExit(f"log-writes-replay: bad magic {magic:#x} (not a dm-log-writes log)")
    if version != 1:
        raise SystemExit(f"log-writes-replay: log version {version}, expected 1")
    pos = sectorsize
    for _ in range(nr_entries):
        log.seek(pos)
        block = log.read(sectorsize)
        if len(block) < 32:
            raise SystemExit(f"log-writes-replay: log ends inside an entry at byte {pos}")
        sector, nr_sectors, flags, data_len = struct.unpack("<QQQQ", block[:32])
        mark = block[32 : 32 + data_len].decode(errors="replace") if flags & MARK else None
        data_at = pos + sectorsize
        yield sector * sectorsize, nr_sectors * sectorsize, flags, mark, data_at
        pos = data_at + (0 if flags & (DISCARD | MARK) else nr_sectors * sectorsize)


def main(argv):
    if len(argv) >= 3 and argv[2] == "--list":
        counts = {"writes": 0, "flush": 0, "fua": 0, "discard": 0, "marks": 0}
        with open(argv[1], "rb") as log:
            for _, length, flags, mark, _ in entries(log):
                if mark is not None:
                    counts["marks"] += 1
                    print(f"mark {mark}")
                    continue
                counts["flush"] += bool(flags & FLUSH)
                counts["fua"] += bool(flags & FUA)
                counts["discard"] += bool(flags & DISCARD)
                counts["writes"] += bool(length and not flags & DISCARD)
        print(" ".join(f"{k}={v}" for k, v in counts.items()))
        return 0
    if len(argv) == 6 and argv[2] == "--replay" and argv[4] == "--until-mark":
        log_path, image, until = argv[1], argv[3], argv[5]
        applied = 0
        with open(log_path, "rb") as log, open(image, "r+b") as img:
            for offset, length, flags, mark, data_at in entries(log):
                if mark == until:
                    print(f"replayed {applied} entries up to mark {until}")
                    return 0
                if mark is not None or not length:
                    continue
                img.seek(offset)
                if flags & DISCARD:
                    img.write(bytes(length))
                else:
                    log.seek(data_at)
                    img.write(log.read(length))
                applied += 1
        raise SystemExit(f"log-writes-replay: no mark {until!r} in the log")
    raise SystemExit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
