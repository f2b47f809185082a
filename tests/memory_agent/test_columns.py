"""FilterColumns (numpy) against the SQL it replaces, on a real SQLite store in tmp_path."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from memory_agent.embedding.hashing import HashingEmbedder
from memory_agent.store.events import EventStore
from memory_agent.store.filter_columns import FilterColumns, in_sorted
from memory_agent.types import Filters, NewEvent, TimeWindow

pytestmark = pytest.mark.timeout(60)

EMB = HashingEmbedder(16)
T0 = 1_700_000_000.0
EVENTS = ("deploy", "rollback", "alert")
SERVICES = ("api", "billing", None)
HANDLES = ("ci", "ops")


def make(i: int) -> NewEvent:
    return NewEvent(
        message_id=f"m-{i}", session="s", from_handle=HANDLES[i % 2], trace_id=f"t-{i % 5}",
        event=EVENTS[i % 3], service=SERVICES[(i // 3) % 3], occurred_at=T0 + 97.0 * ((i * 37) % 101),
        received_at=T0, payload={"i": i}, text=f"event {i}",
    )


async def put(store: EventStore, events: list[NewEvent]) -> list[int]:
    return [r.id for r in await store.insert(events, EMB.encode([e.text for e in events]), model=EMB.name)]


CASES = [
    (None, Filters(event=("rollback",))),
    (TimeWindow(since=T0 + 97 * 10, until=T0 + 97 * 40), Filters()),
    (TimeWindow(since=T0 + 97 * 10), Filters(service=("api", "billing"))),
    (TimeWindow(until=T0 + 97 * 70), Filters(event=("deploy", "alert"), from_handle=("ops",))),
    (None, Filters(service=("nope",))),
    (None, Filters(event=("deploy",), service=("billing",), from_handle=("ci",))),
]


async def test_columns_select_what_sql_selects_through_inserts_and_deletes(tmp_path: Path) -> None:
    sql = await EventStore.open(tmp_path / "a.sqlite3")
    mem = await EventStore.open(tmp_path / "b.sqlite3", filter_columns=True)
    try:
        for store in (sql, mem):
            await put(store, [make(i) for i in range(150)])
        assert await mem.columns_ready() and not await sql.columns_ready()
        for step in range(3):
            for window, filters in CASES:
                want = await sql.candidate_ids(window, filters)
                got = await mem.candidate_ids(window, filters)
                assert want is not None and got is not None and got.dtype == np.int64
                assert got.tolist() == want.tolist(), (step, window, filters)
                assert await mem.count(window, filters) == await sql.count(window, filters) == len(want)
            assert await mem.count(None, Filters()) == await sql.count(None, Filters())
            # Inserts and deletes after the load keep them in step.
            new = [make(i) for i in range(150 + 40 * step, 190 + 40 * step)]
            ids = [await put(s, new) for s in (sql, mem)]
            assert ids[0] == ids[1]
            gone = ids[0][::3] + [int(x) for x in (await sql.candidate_ids(None, Filters(event=("alert",))))[:5]]
            assert await sql.delete(gone) == await mem.delete(gone)
        assert await mem.candidate_ids(None, Filters()) is None
        # A trace filter is answered by SQL (not kept in memory), with the same result.
        traced = await mem.candidate_ids(None, Filters(trace_id=("t-1",), event=("deploy",)))
        assert traced is not None and traced.tolist() == (await sql.candidate_ids(None, Filters(
            trace_id=("t-1",), event=("deploy",)))).tolist()  # type: ignore[union-attr]
    finally:
        await sql.close()
        await mem.close()


async def test_rows_written_while_the_columns_load_are_not_missed(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    store = await EventStore.open(path)
    await put(store, [make(i) for i in range(300)])
    await store.close()
    store = await EventStore.open(path, filter_columns=True)
    try:
        ids = await put(store, [make(i) for i in range(300, 320)])  # races the background load
        await store.delete([*ids[:4], 1, 2])
        assert await store.columns_ready()
        got = await store.candidate_ids(TimeWindow(since=0), Filters())
        assert got is not None and got.tolist() == sorted(set(range(3, 321)) - set(ids[:4]))
    finally:
        await store.close()


def test_filter_columns_unit() -> None:
    rows = [(i, float(i), EVENTS[i % 3], SERVICES[i % 3], HANDLES[i % 2], float(i)) for i in (5, 1, 3, 2, 4)]
    cols = FilterColumns.from_rows(rows)
    assert len(cols) == 5 and cols.max_id == 5
    assert cols.select(None, Filters(service=("api",))).tolist() == [3]
    assert cols.select(TimeWindow(since=2, until=4), Filters()).tolist() == [2, 3]
    cols.add([(6, 6.0, "new", None, "x", 6.0), (9, 0.5, "deploy", "api", "ci", 0.5)])
    assert cols.select(None, Filters(event=("new", "deploy"))).tolist() == [3, 6, 9]
    cols.remove([3, 100, 0])
    assert cols.select(None, Filters(event=("new", "deploy"))).tolist() == [6, 9] and len(cols) == 6
    with pytest.raises(ValueError):
        cols.add([(8, 1.0, "x", None, "y", 1.0)])  # not above the ids held
    with pytest.raises(ValueError):
        cols.select(None, Filters(trace_id=("t",)))
    big = FilterColumns(capacity=16)
    big.add([(i, float(i), "e", None, "h", float(i)) for i in range(1, 2000)])  # grows
    assert big.select(TimeWindow(since=1990), Filters()).tolist() == list(range(1990, 2000))
    assert list(itertools.islice(big.select(None, Filters(event=("e",))), 3)) == [1, 2, 3]


def test_filter_columns_leave_out_reports_dated_ahead_of_receipt_and_expire_them_by_receipt() -> None:
    day = 86_400.0
    cols = FilterColumns.from_rows([
        (1, 100 * day, "rollback", None, "deploy", 100 * day),  # on time
        (2, 100 * day + 3600, "rollback", None, "deploy", 100 * day),  # an hour ahead: within the skew
        (3, 465 * day, "rollback", None, "deploy", 100 * day),  # a year ahead
        (4, 50 * day, "rollback", None, "deploy", 60 * day),  # late: received ten days after
    ])
    window = TimeWindow(since=99 * day, future_skew=day)
    assert cols.select(window, Filters()).tolist() == [1, 2]  # 3 is dated a year after its receipt
    assert cols.select(TimeWindow(since=99 * day), Filters()).tolist() == [1, 2, 3]  # without the skew rule
    # retention 80 days old at day 181: 4 by its date; 3 by its receipt (day 100), not its claimed date
    assert cols.expired(101 * day, future_skew=day).tolist() == [1, 2, 3, 4]
    assert cols.expired(99 * day, future_skew=day).tolist() == [4]


def test_in_sorted_tells_which_ids_are_held() -> None:
    held = np.array([2, 5, 9], dtype=np.int64)
    assert in_sorted([9, 1, 5, 10, 2], held).tolist() == [True, False, True, False, True]
    assert in_sorted(np.array([3], dtype=np.int64), held).tolist() == [False]
    assert in_sorted([1, 2], np.array([], dtype=np.int64)).tolist() == [False, False]
    assert in_sorted([], held).tolist() == []
