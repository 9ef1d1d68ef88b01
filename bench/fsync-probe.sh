#!/usr/bin/env bash
# The storage device's own durable-write latency: what a durable decision log cannot beat.
#
# usage: bench/fsync-probe.sh [DIR]     (default DIR: a temporary directory under /tmp;
#                                        knobs: COUNT=2000 BYTES=512)
#
# Writes BYTES at successive offsets of a preallocated 16 MiB file in DIR and times each
# fdatasync, one writer, nothing else running; prints p50, p90, p99 and the maximum in ms.
# Run it on the file system of the data directory (`arbiter serve --data`).
set -euo pipefail
DIR=${1:-$(mktemp -d /tmp/arbiter-fsync.XXXXXX)}
COUNT=${COUNT:-2000} BYTES=${BYTES:-512}
python3 - "$DIR" "$COUNT" "$BYTES" <<'PY'
import os, sys, time
d, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
path = os.path.join(d, "fsync-probe.bin")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
try:
    os.ftruncate(fd, 16 << 20)
    os.fsync(fd)
    buf, lat = b"x" * size, []
    for i in range(count):
        os.pwrite(fd, buf, (i * size) % (16 << 20))
        t = time.perf_counter()
        os.fdatasync(fd)
        lat.append((time.perf_counter() - t) * 1000)
finally:
    os.close(fd)
    os.unlink(path)
lat.sort()
q = lambda x: lat[int(x * (len(lat) - 1))]
print(f"fdatasync of {size} B, {count} times in {d}: "
      f"p50 {q(.5):.3f} ms  p90 {q(.9):.3f} ms  p99 {q(.99):.3f} ms  max {lat[-1]:.3f} ms")
PY
