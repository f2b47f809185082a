"""What the fault tests share: the real daemon as a subprocess, agents that report and ask, and direct
reads of the daemon's files (SQLite, the FAISS index and its sidecar).

Counts live in :data:`COUNTS`: smaller ones by default (every test still runs, with fewer reports, so
``python -m pytest`` finishes in minutes), the issue's full numbers with ``FAULT_COUNTS=full``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import numpy as np

from memory_agent.index.flat import FlatIndex
from memory_agent.index.repair import load_index
from mesh import AsyncAgent, MeshError, Message, Opened
from mesh.constants import SESSIONS_BUCKET, STREAM_NAME
from mesh.handles import durable_name
from mesh.sessions import SessionState

ROOT = Path(__file__).resolve().parents[2]
#: ``FAULT_COUNTS=full`` runs the fault tests at the issue's counts (about 15 minutes on 2 cores).
FULL_COUNTS = os.environ.get("FAULT_COUNTS", "").strip().lower() == "full"
MODEL_DIM = 384  # all-MiniLM-L6-v2
SERVING = re.compile(r"Agents connect to: (nats://\S+)")


@dataclass(frozen=True, slots=True)
class Counts:
    """How much each fault test sends; one place, so the default run can use smaller counts of the same tests."""

    sigkill_reports: int
    """Reports in flight when the daemon is SIGKILLed (issue: 5,000)."""
    restart_reports: int
    """Reports sent while nats-server restarts."""
    burst_reports: int
    """Reports in one burst (issue: 50,000)."""
    askers: int
    """Agents asking at once while ingest runs (issue: 100)."""
    questions_per_asker: int
    ingest_during_questions: int
    """Reports ingested while the askers ask."""
    fuzz_examples: int
    """Hypothesis examples per fuzz test."""
    backlog_reports: int
    """Reports stored before a SIGKILL during the embedding backlog."""
    queued_reports: int
    """Reports waiting in the daemon (storage locked) when a question is asked (issue: 10,000)."""
    lock_seconds: float
    """How long another process holds SQLite's write lock (the old code gave up after about 30 s)."""
    disk_full_seconds: float
    """How long the data directory's disk stays full (issue: 60 s)."""


FULL = Counts(sigkill_reports=5_000, restart_reports=2_000, burst_reports=50_000, askers=100,
              questions_per_asker=5, ingest_during_questions=2_000, fuzz_examples=150,
              backlog_reports=5_000, queued_reports=10_000, lock_seconds=90.0, disk_full_seconds=60.0)
SMALL = Counts(sigkill_reports=1_000, restart_reports=500, burst_reports=5_000, askers=50,
               questions_per_asker=3, ingest_during_questions=500, fuzz_examples=60,
               backlog_reports=1_000, queued_reports=1_000, lock_seconds=35.0, disk_full_seconds=10.0)
COUNTS = FULL if FULL_COUNTS else SMALL


def short_report(seq: int, run: str) -> dict[str, Any]:
    """A small report (the embedder's cost grows with text length); ``seq`` makes each one unique."""
    return {"event": "fault_probe", "service": f"svc-{seq % 7}", "run": run, "seq": seq}


# --- the daemon process -------------------------------------------------------------------------------


class DaemonProcess:
    """``python -m memory_agent run --data-dir ... --nats-url ...`` with the real MiniLM model.

    ``start()`` blocks until the daemon prints its "Agents connect to" line (or raises with its log).
    Its stderr is read by a thread into :meth:`log`, so the pipe never fills.
    """

    def __init__(self, data_dir: Path, nats_url: str, *, env: Mapping[str, str] | None = None,
                 prefix: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.nats_url = nats_url
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **(env or {})}
        self.prefix = list(prefix)  # a command that runs the daemon, e.g. nsenter into a mount namespace
        self.proc: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "start() first"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 180.0) -> DaemonProcess:
        with self._lock:
            self._lines.clear()
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "memory_agent", "run", "--data-dir", str(self.data_dir),
             "--nats-url", self.nats_url],
            env=self.env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, errors="replace",
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        try:
            self.wait_for_log(SERVING, timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            with self._lock:
                self._lines.append(line)

    def log(self) -> str:
        """Everything the current process wrote to stderr so far."""
        with self._lock:
            return "".join(self._lines)

    def wait_for_log(self, pattern: str | re.Pattern[str], timeout: float) -> re.Match[str]:
        """The first match of ``pattern`` in the log; raises AssertionError (with the log) on timeout or exit."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.log())
            if found:
                return found
            if self.proc is None or self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader catch the last lines
                raise AssertionError(f"daemon exited before logging {regex.pattern!r}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon did not log {regex.pattern!r} within {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    def rss_mib(self) -> float:
        """Resident memory of the daemon (VmRSS from /proc), MiB."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert found, status
        return int(found.group(1)) / 1024

    def kill(self) -> None:
        """SIGKILL (a crash: nothing is flushed, saved or acknowledged)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        self._join()

    def wait_exit(self, timeout: float) -> int:
        """Wait for the daemon to exit on its own; returns its exit code (AssertionError with the log if not)."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon did not exit within {timeout} s:\n{self.log()}") from None
        self._join()
        return int(code)

    def stop(self, timeout: float = 120.0) -> int:
        """SIGTERM and wait: the daemon drains, saves its index and exits; returns its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"daemon did not stop within {timeout} s of SIGTERM:\n{self.log()}") from None
        self._join()
        return int(self.proc.returncode)

    def _join(self) -> None:
        if self._reader is not None:
            self._reader.join(5)
            self._reader = None


class SmallDisk:
    """A tmpfs of ``size_mib`` MiB at ``path`` in a private mount namespace: a full disk, for real.

    ``unshare --user --map-root-user --mount`` needs no privilege (an unprivileged user namespace); a
    sleeping process holds the namespace. The daemon runs inside it through :attr:`prefix` (``nsenter``);
    the test reaches the files through :meth:`outside` (``/proc/<holder>/root/...``), so it can fill the
    disk and free it while the daemon writes there; SQLite resolves that magic link to the test's own
    namespace, so the database is read by a process inside it (:meth:`embedded_count`) or copied out
    (:meth:`copy_out`). The mount disappears with the holder.
    """

    def __init__(self, path: Path, size_mib: int) -> None:
        self.path = path
        self.size_mib = size_mib
        self.proc: subprocess.Popen[str] | None = None

    @staticmethod
    def available() -> bool:
        try:
            done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                                   "mount -t tmpfs -o size=1m tmpfs /mnt && echo ok"],
                                  capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return False
        return done.stdout.strip() == "ok"

    def start(self) -> SmallDisk:
        self.path.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
             f"mount -t tmpfs -o size={self.size_mib}m tmpfs {self.path} && echo mounted && exec sleep 3600"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == "mounted", f"could not mount a tmpfs in a user namespace: {line}"
        return self

    @property
    def prefix(self) -> list[str]:
        assert self.proc is not None
        return ["nsenter", f"--target={self.proc.pid}", "--user", "--mount", "--preserve-credentials"]

    def outside(self, inside: Path) -> Path:
        """The path, seen from the test's mount namespace, of ``inside`` as the daemon sees it."""
        assert self.proc is not None
        return Path(f"/proc/{self.proc.pid}/root") / Path(inside).resolve().relative_to("/")

    def embedded_count(self, db: Path) -> tuple[int, int]:
        """:func:`embedded_count` of the database at ``db`` (a path inside), read from inside the namespace."""
        code = ("import sqlite3, sys, os\n"
                "if not os.path.exists(sys.argv[1]): print(0, 0); raise SystemExit\n"
                "c = sqlite3.connect(sys.argv[1], timeout=10)\n"
                "print(*c.execute('SELECT count(*), count(embedding_model) FROM events').fetchone())")
        out = subprocess.run([*self.prefix, sys.executable, "-c", code, str(db)], capture_output=True, text=True,
                             timeout=60, check=True)
        total, embedded = out.stdout.split()
        return int(total), int(embedded)

    def copy_out(self, data: Path, dest: Path) -> Path:
        """Copy the daemon's data directory (``data``, inside; the daemon stopped) to ``dest``; returns ``dest``."""
        shutil.copytree(self.outside(data), dest)
        return dest

    def free_bytes(self) -> int:
        st = os.statvfs(self.outside(self.path))
        return st.f_bavail * st.f_frsize

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


# --- agents ------------------------------------------------------------------------------------------


class Reporters:
    """``n`` registered agents that open sessions to @memory and collect the replies (the resolves).

    ``replies`` maps a session id to the reply message. Close with ``await close()``.
    """

    def __init__(self, nats_url: str, n: int = 8, *, prefix: str = "reporter") -> None:
        tag = uuid.uuid4().hex[:6]
        self.agents = [AsyncAgent(f"{prefix}-{tag}-{i}", servers=nats_url, max_in_flight=256) for i in range(n)]
        self.replies: dict[str, Message] = {}
        for agent in self.agents:
            agent.on_message(self._on_reply)

    async def _on_reply(self, msg: Message) -> None:
        if msg.message_type == "session_resolve":
            self.replies[msg.session] = msg

    async def start(self) -> Reporters:
        for agent in self.agents:
            await agent.start()
            await agent.register()
        return self

    async def close(self) -> None:
        for agent in self.agents:
            await agent.close()

    async def report(self, i: int, payload: Mapping[str, Any], *, trace_id: str | None = None) -> Opened:
        """Open a session to @memory with ``payload`` as JSON, from agent ``i % n``."""
        agent = self.agents[i % len(self.agents)]
        return await agent.open_session("memory", json.dumps(payload), content_type="application/json",
                                        trace_id=trace_id)

    async def report_many(self, payloads: Sequence[Mapping[str, Any]], *, concurrency: int = 128,
                          retry_for: float = 0.0) -> list[Opened]:
        """Send every payload (at most ``concurrency`` opens at once); returns the Opened, in order.

        ``retry_for`` > 0: a send that raises MeshError is retried (as a new session) for up to that
        many seconds, e.g. while nats-server restarts.
        """
        slots = asyncio.Semaphore(concurrency)

        async def one(i: int, payload: Mapping[str, Any]) -> Opened:
            async with slots:
                deadline = time.monotonic() + retry_for
                while True:
                    try:
                        return await self.report(i, payload)
                    except MeshError:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.2)

        return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(payloads))))

    async def wait_replies(self, sessions: Iterable[str], timeout: float) -> dict[str, dict[str, Any]]:
        """Wait until every session has its reply; returns session -> decoded JSON reply.

        Raises AssertionError naming how many are missing after ``timeout`` seconds.
        """
        wanted = list(sessions)
        deadline = time.monotonic() + timeout
        while True:
            missing = [s for s in wanted if s not in self.replies]
            if not missing:
                return {s: json.loads(self.replies[s].payload) for s in wanted}
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(missing)} of {len(wanted)} sessions got no reply within {timeout} s")
            await asyncio.sleep(0.2)


    async def collect_replies(self, sessions: Iterable[str], nats_url: str, timeout: float) -> dict[str, Any]:
        """Wait until every session has its reply or @memory's inbox is drained (nothing pending, nothing
        unacknowledged) and 2 s have passed; returns session -> decoded reply for those that came."""
        wanted = list(sessions)
        deadline = time.monotonic() + timeout
        drained_since: float | None = None
        while True:
            if all(s in self.replies for s in wanted):
                break
            if await inbox_drained(nats_url):
                drained_since = drained_since or time.monotonic()
                if time.monotonic() - drained_since > 2.0:
                    break
            else:
                drained_since = None
            if time.monotonic() > deadline:
                raise AssertionError(f"@memory's inbox did not drain within {timeout} s")
            await asyncio.sleep(0.25)
        return {s: json.loads(self.replies[s].payload) for s in wanted if s in self.replies}


async def inbox_drained(nats_url: str) -> bool:
    """True when @memory's durable consumer has nothing pending and nothing awaiting an ack."""
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().consumer_info(STREAM_NAME, durable_name("memory"))
        return not info.num_pending and not info.num_ack_pending
    finally:
        await nc.close()


async def resolved_sessions(nats_url: str, sessions: Iterable[str], handle: str = "memory") -> set[str]:
    """The sessions whose record kept by ``handle`` (the mesh's session bucket, key ``<handle>.<session>``)
    says resolved."""
    nc = await nats.connect(nats_url)
    try:
        kv = await nc.jetstream().key_value(SESSIONS_BUCKET)
        out = set()
        for session in sessions:
            try:
                entry = await kv.get(f"{handle}.{session}")
            except nats.js.errors.KeyNotFoundError:
                continue
            if entry.value is not None and SessionState.decode(session, handle, entry.value).resolved:
                out.add(session)
        return out
    finally:
        await nc.close()


async def ask(agent: AsyncAgent, query: Mapping[str, Any] | str, *, timeout: float = 60.0) -> Any:
    """A structured question (dict, answered in JSON) or a plain one (str, answered in text)."""
    if isinstance(query, str):
        return (await agent.request("memory", query, timeout=timeout)).payload
    reply = await agent.request("memory", json.dumps(query), content_type="application/json", timeout=timeout)
    return json.loads(reply.payload)


async def wait_rows(db: Path, count: int, timeout: float, *, poll: float = 0.2) -> int:
    """Poll the daemon's SQLite (a separate reader, WAL) until it holds ``count`` rows; returns the count."""
    deadline = time.monotonic() + timeout
    while True:
        n = await asyncio.to_thread(row_count, db)
        if n >= count:
            return n
        if time.monotonic() > deadline:
            raise AssertionError(f"SQLite holds {n} rows after {timeout} s, expected {count}")
        await asyncio.sleep(poll)


# --- the daemon's files ------------------------------------------------------------------------------


def row_count(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db, timeout=10) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


def embedded_count(db: Path) -> tuple[int, int]:
    """``(rows, rows with a vector)`` of the daemon's SQLite (a WAL reader)."""
    if not db.exists():
        return 0, 0
    with sqlite3.connect(db, timeout=10) as conn:
        total, embedded = conn.execute("SELECT count(*), count(embedding_model) FROM events").fetchone()
    return int(total), int(embedded)


async def wait_embedded(db: Path, count: int, timeout: float, *, poll: float = 0.25,
                        counter: Callable[[Path], tuple[int, int]] = embedded_count) -> None:
    """Poll SQLite until it holds ``count`` rows, every one with a vector (the backlog embedded)."""
    deadline = time.monotonic() + timeout
    while True:
        total, embedded = await asyncio.to_thread(counter, db)
        if total >= count and embedded == total:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout} s SQLite holds {total} rows, {embedded} with a vector; "
                                 f"expected {count}, all embedded")
        await asyncio.sleep(poll)


@dataclass(frozen=True, slots=True)
class StoredRows:
    """What SQLite holds, in id order: ids, message ids, payloads (decoded); and the ids that have a vector
    with those vectors (a row is stored first and embedded behind)."""

    ids: np.ndarray
    message_ids: list[str]
    payloads: list[Any]
    embedded_ids: np.ndarray
    vectors: np.ndarray

    @property
    def all_embedded(self) -> bool:
        return np.array_equal(self.ids, self.embedded_ids)


def read_rows(db: Path) -> StoredRows:
    """Every row of the events table (open only while the daemon is stopped, or as a WAL reader)."""
    with sqlite3.connect(db, timeout=10) as conn:
        rows = conn.execute("SELECT id, message_id, payload, embedding FROM events ORDER BY id").fetchall()
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    with_vector = [r for r in rows if r[3] is not None]
    embedded = np.array([r[0] for r in with_vector], dtype=np.int64)
    vectors = (np.frombuffer(b"".join(r[3] for r in with_vector), dtype="<f4").reshape(len(with_vector), -1)
               if with_vector else np.zeros((0, MODEL_DIM), dtype=np.float32))
    return StoredRows(ids, [r[1] for r in rows], [json.loads(r[2]) for r in rows], embedded, vectors)


def assert_index_agrees(data_dir: Path, rows: StoredRows) -> FlatIndex:
    """The saved FAISS file (checked against its sidecar) holds exactly SQLite's ids that have a vector,
    with SQLite's vectors."""
    index = load_index(data_dir / "index.faiss", dim=MODEL_DIM, kind="flat")
    held = np.sort(index.ids())
    assert np.array_equal(held, rows.embedded_ids), (
        f"index holds {len(held)} ids, SQLite {len(rows.embedded_ids)} with a vector; "
        f"only in index: {sorted(set(held.tolist()) - set(rows.embedded_ids.tolist()))[:10]}, "
        f"only in SQLite: {sorted(set(rows.embedded_ids.tolist()) - set(held.tolist()))[:10]}"
    )
    if len(rows.embedded_ids):
        assert np.array_equal(index.vectors(rows.embedded_ids), rows.vectors), "index vectors differ from SQLite's"
    return index
