"""Python feedparser's parsing speed on the same feed files as
engine/benches/parse/main.rs, which runs this script and compares.

Reads the paths of the feed files from standard input (one per line),
loads them all into memory, parses each with ``feedparser.parse(bytes)``
in-process (one untimed pass first), then repeats whole passes until
``--secs`` seconds of parsing have been timed (or exactly ``--iters``
passes), and prints one JSON object: MB/s (10^6 bytes), items/s (entries)
and files/s by wall time, MB/s and items/s per second on a core, bozo and
exception counts, the five slowest files by time per MB and the five that
take the largest share of the time.

Run alone:
    find fixtures/corpus/feeds -type f | sort | python benches/feedparser_speed.py --secs 2
"""

import argparse
import json
import platform
import sys
import time

import feedparser


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--secs", type=float, default=2.0, help="timed seconds at least")
    ap.add_argument("--iters", type=int, default=0, help="exact number of timed passes")
    ap.add_argument("--root", default="", help="prefix removed from paths in the report")
    args = ap.parse_args()

    paths = [line.strip() for line in sys.stdin if line.strip()]
    docs = []
    for p in paths:
        with open(p, "rb") as f:
            docs.append((p, f.read()))
    if not docs:
        print(json.dumps({"error": "no files given on standard input"}))
        return 1

    # Untimed pass: imports settle, and the counts (which do not change
    # between passes) are taken here.
    entries = 0
    bozo = 0
    exceptions = 0
    for _, body in docs:
        try:
            d = feedparser.parse(body)
        except Exception:  # noqa: BLE001 - a crash is counted, not fatal
            exceptions += 1
            continue
        entries += len(d.entries)
        bozo += 1 if d.bozo else 0

    per_file = [0.0] * len(docs)
    passes = 0
    timed = 0.0
    clock = time.perf_counter
    cpu_start = time.thread_time()
    while True:
        for i, (_, body) in enumerate(docs):
            t = clock()
            try:
                feedparser.parse(body)
            except Exception:  # noqa: BLE001
                pass
            per_file[i] += clock() - t
        passes += 1
        timed = sum(per_file)
        if args.iters > 0:
            if passes >= args.iters:
                break
        elif timed >= args.secs:
            break
    cpu = time.thread_time() - cpu_start

    total_bytes = sum(len(b) for _, b in docs)
    mb = total_bytes / 1e6

    def short(p: str) -> str:
        return p[len(args.root):].lstrip("/") if args.root and p.startswith(args.root) else p

    def row(i: int) -> dict:
        size = len(docs[i][1])
        return {
            "file": short(docs[i][0]),
            "bytes": size,
            "mb_per_s": (size * passes / 1e6) / per_file[i] if per_file[i] > 0 else None,
            "ms_per_pass": per_file[i] * 1e3 / passes,
            "share": per_file[i] / timed if timed > 0 else None,
        }

    by_time_per_mb = sorted(
        range(len(docs)), key=lambda i: per_file[i] / max(len(docs[i][1]), 1), reverse=True
    )
    by_share = sorted(range(len(docs)), key=lambda i: per_file[i], reverse=True)
    print(
        json.dumps(
            {
                "parser": "feedparser",
                "version": feedparser.__version__,
                "python": platform.python_version(),
                "files": len(docs),
                "bytes": total_bytes,
                "passes": passes,
                "seconds": timed,
                "items_per_pass": entries,
                "bozo": bozo,
                "exceptions": exceptions,
                "mb_per_s": mb * passes / timed,
                "items_per_s": entries * passes / timed,
                "files_per_s": len(docs) * passes / timed,
                # Per second on a core (the box may be shared: wall time
                # includes waiting for one).
                "cpu_seconds": cpu,
                "cpu_mb_per_s": mb * passes / cpu if cpu > 0 else None,
                "cpu_items_per_s": entries * passes / cpu if cpu > 0 else None,
                "slowest": [row(i) for i in by_time_per_mb[:5]],
                "largest_share": [row(i) for i in by_share[:5]],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
