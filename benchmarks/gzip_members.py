"""Time the server's gunzip on bodies made of many tiny gzip members (issue 9, item 2).

Usage: ``python benchmarks/gzip_members.py [--mib 1 8] [--baseline]``. Each body is
``--mib`` MiB of one-byte gzip members (about 21 bytes each); the limit is large enough
that the whole body is decompressed. ``--baseline`` also times the algorithm before the fix
(a new decompressor fed the whole rest of the body for every member), which is quadratic.
"""

from __future__ import annotations

import argparse
import gzip
import time
import zlib

from miniobserv.server.api.body import GZIP_WBITS, gunzip_limited


def tiny_members(size: int) -> bytes:
    member = gzip.compress(b"x", mtime=0)
    return member * (size // len(member))


def baseline(data: bytes, limit: int) -> bytes:
    """The loop before the fix: ``unused_data`` copies the rest of the body per member."""
    out: list[bytes] = []
    while True:
        decompressor = zlib.decompressobj(GZIP_WBITS)
        out.append(decompressor.decompress(data, limit))
        data = decompressor.unused_data
        if not data.strip(b"\x00"):
            return b"".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--baseline", action="store_true")
    args = parser.parse_args()
    for mib in args.mib:
        data = tiny_members(mib << 20)
        for name, function in [("linear", gunzip_limited)] + \
                ([("baseline", baseline)] if args.baseline else []):
            started = time.perf_counter()
            out = function(data, 1 << 30)
            elapsed = time.perf_counter() - started
            print(f"{mib} MiB, {len(out)} members, {name}: {elapsed:.3f} s")


if __name__ == "__main__":
    main()
