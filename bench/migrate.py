"""How long a store takes to reach this release's schema, on a copy of a real store or a synthetic one.

    python bench/migrate.py --store /path/to/data/memory.sqlite3     # a copy of an existing store
    python bench/migrate.py --events 200000                          # a synthetic store at --from-version

Migrations run once, when the daemon (or ``reindex``, ``import`` ...) first opens a store written by an
older release. Most edit the schema only; migration 10 (message ids unique per sender) builds an index.
The store is copied (never migrated in place) into ``--work`` and ``memory_agent.store.schema.migrate``
is timed from its version to the newest. Prints the seconds, events per second, the file's size before and
after and the largest write-ahead log seen, and appends the result to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import append_doc

from memory_agent.store.schema import SCHEMA_VERSION, migrate, user_version

SECTION = "## Schema migration (bench/migrate.py)"
INTRO = (
    "Time for a store written by an older release to reach this release's schema (what the first start after "
    "an upgrade waits for), on a copy of the store. Migration 10 (message ids unique per sender) copies the "
    "events table once."
)


def synthetic(path: Path, events: int, version: int) -> None:
    """A store at schema ``version`` holding ``events`` reports with 384-float embeddings, like a daemon's."""
    migrate(path, target=version)
    conn = sqlite3.connect(path, isolation_level=None)
    rng = np.random.default_rng(7)
    conn.execute("BEGIN")
    for start in range(0, events, 10_000):
        rows = []
        for n in range(start, min(start + 10_000, events)):
            vec = rng.standard_normal(384).astype(np.float32)
            rows.append((f"m-{n}", f"s-{n}", f"agent-{n % 50}", f"t-{n // 3}", "rollback", f"svc-{n % 200}",
                         1.7e9 + n, 1.7e9 + n, json.dumps({"event": "rollback", "n": n}),
                         f"rollback of svc-{n % 200} number {n} after error rate rose", vec.tobytes(),
                         "all-MiniLM-L6-v2", 384))
        conn.executemany(
            "INSERT INTO events (message_id, session, from_handle, trace_id, event, service, occurred_at, received_at, "
            "payload, text, embedding, embedding_model, embedding_dim) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="an existing memory.sqlite3 to copy and migrate")
    parser.add_argument("--events", type=int, default=100_000, help="events in the synthetic store (no --store)")
    parser.add_argument("--from-version", type=int, default=9, help="schema version of the synthetic store")
    parser.add_argument("--work", type=Path, default=None, help="directory for the copy (default: a temp dir)")
    parser.add_argument("--no-append", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-migrate-", dir=args.work))
    path = work / "memory.sqlite3"
    try:
        if args.store is not None:
            if not args.store.is_file():
                parser.error(f"--store {args.store}: no such file")
            print(f"copying {args.store} ({args.store.stat().st_size / 2**30:.2f} GiB) to {path} ...", flush=True)
            shutil.copyfile(args.store, path)
            for suffix in ("-wal", "-shm"):
                side = args.store.with_name(args.store.name + suffix)
                if side.exists():
                    shutil.copyfile(side, path.with_name(path.name + suffix))
            what = f"a copy of {args.store}"
        else:
            print(f"writing a synthetic store of {args.events:,} events at version {args.from_version} ...", flush=True)
            synthetic(path, args.events, args.from_version)
            what = f"a synthetic store at version {args.from_version}"
        conn = sqlite3.connect(path)
        before, count = user_version(conn), int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
        conn.close()
        size_before = path.stat().st_size
        wal = path.with_name(path.name + "-wal")
        peak = [0]
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.2):
                peak[0] = max(peak[0], wal.stat().st_size if wal.exists() else 0)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        print(f"migrating {count:,} events from version {before} to {SCHEMA_VERSION} ...", flush=True)
        started = time.perf_counter()
        migrate(path)
        seconds = time.perf_counter() - started
        done.set()
        watcher.join()
        size_after = path.stat().st_size
        line = (f"{what}: {count:,} events, version {before} -> {SCHEMA_VERSION} in {seconds:.1f} s "
                f"({count / max(seconds, 1e-9):,.0f} events/s); file {size_before / 2**30:.2f} -> "
                f"{size_after / 2**30:.2f} GiB, write-ahead log up to {peak[0] / 2**30:.2f} GiB")
        print(line)
        if not args.no_append:
            command = "python bench/migrate.py " + (f"--store {args.store}" if args.store else f"--events {args.events}")
            append_doc([f"- {line}"], command, section=SECTION, intro=INTRO)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
