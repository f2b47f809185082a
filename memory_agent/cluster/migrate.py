"""``memory-agent publish-store``: grow a single-node store into a cluster (issue 15, item 6).

Every event of an existing store (the daemon stopped: its data directory's lock is taken) is published
to the events stream, in id order, ``batch`` publishes in flight at a time, each with ``Nats-Msg-Id`` =
its ``message_id`` and its original fields (``received_at`` included). Replicas started on empty data
directories then catch up from the stream. Ids change: an event's id becomes its stream sequence (the
same on every replica); ``message_id``, trace ids and times stay. Running it again within the stream's
duplicate window (2 minutes) publishes nothing new; later, the copies it publishes are skipped by every
replica (a ``message_id`` already stored). Vectors are carried when the store holds one model's
(the usual case; ``cluster.share_vectors``): each event's vector is published to the vectors stream under
its new id, so replicas started empty take them instead of embedding (:mod:`memory_agent.cluster.vectors`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from memory_agent.cluster.codec import encode_report, encode_vector
from memory_agent.cluster.stream import StreamLimits, ensure_stream, stream_subject
from memory_agent.cluster.vectors import ensure_vector_stream, vector_subject
from memory_agent.config import Config
from memory_agent.errors import ConfigError
from memory_agent.store.events import EventStore
from memory_agent.tools.datadir import lock_data_dir
from memory_agent.types import NewEvent
from mesh import AsyncAgent
from mesh.access import jetstream

__all__ = ["PublishSummary", "publish_store"]


@dataclass(slots=True)
class PublishSummary:
    """What a publish did: events read, published new, already in the stream, vectors published; seconds
    taken."""

    events: int = 0
    published: int = 0
    duplicates: int = 0
    vectors: int = 0
    first_seq: int = 0
    last_seq: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return (f"{self.events} events read: {self.published} published to the events stream (sequences "
                f"{self.first_seq}..{self.last_seq}), {self.duplicates} already there, {self.vectors} vectors "
                f"published, in {self.seconds:.1f} s")


_NEW_EVENT_FIELDS = tuple(f.name for f in dataclass_fields(NewEvent))


async def publish_store(cfg: Config, *, batch: int = 500,
                        progress: Callable[[PublishSummary], None] | None = None) -> PublishSummary:
    """Publish the store at ``cfg.db_path`` to the stream ``cfg.cluster.stream`` on ``cfg.nats_url``
    (created with ``cluster.stream_replicas`` if missing). Raises ``ConfigError`` without a ``nats_url``
    or when JetStream refuses (the events published so far stay; run it again to finish)."""
    if not cfg.nats_url:
        raise ConfigError("publish-store needs the cluster's NATS: set nats_url (or --nats-url)", key="nats_url")
    if not cfg.db_path.exists():
        raise ConfigError(f"no store at {cfg.db_path}: point --data-dir at the single node's data directory",
                          key="data_dir")
    lock = lock_data_dir(cfg.data_dir)
    summary = PublishSummary()
    started = time.perf_counter()
    agent = AsyncAgent(cfg.nats.client_handle or "memory-migrate",
                       servers=[u.strip() for u in cfg.nats_url.split(",") if u.strip()], auth=cfg.nats.auth())
    try:
        await agent.start()
        js = jetstream(agent)
        c = cfg.cluster
        await ensure_stream(js, c.stream, StreamLimits(replicas=c.stream_replicas, max_age=c.max_age,
                                                       max_bytes=c.max_bytes))
        async with await EventStore.open(cfg.db_path) as store:
            models = await store.vector_models()
            model = models[0].model if len(models) == 1 and c.share_vectors else None
            if model is not None:
                await ensure_vector_stream(js, c.vector_stream, events_stream=c.stream, replicas=c.stream_replicas,
                                           max_age=c.max_age)
            async for ids, _texts in store.iter_texts(batch=batch):
                events = await store.get(ids)
                bodies = [encode_report(NewEvent(**{k: getattr(e, k) for k in _NEW_EVENT_FIELDS})) for e in events]
                try:
                    acks = await asyncio.gather(*(
                        js.publish(stream_subject(c.stream), body, stream=c.stream, headers=headers, timeout=30)
                        for body, headers in bodies))
                except (nats.errors.Error, nats.js.errors.Error) as exc:
                    raise ConfigError(f"the events stream {c.stream} refused a publish after {summary.events} "
                                      f"events ({type(exc).__name__}: {exc}); run publish-store again to finish "
                                      "(what is in the stream is skipped)", key="cluster.stream") from None
                summary.events += len(events)
                if model is not None:
                    summary.vectors += await _publish_vectors(
                        js, store, {e.id: int(a.seq) for e, a in zip(events, acks, strict=True)}, model,
                        stream=c.stream, vector_stream=c.vector_stream)
                for ack in acks:
                    if ack.duplicate:
                        summary.duplicates += 1
                    else:
                        summary.published += 1
                        summary.first_seq = summary.first_seq or int(ack.seq)
                        summary.last_seq = max(summary.last_seq, int(ack.seq))
                if progress is not None:
                    progress(summary)
    finally:
        await agent.close()
        lock.close()
    summary.seconds = time.perf_counter() - started
    return summary


async def _publish_vectors(js: JetStreamContext, store: EventStore, seq_of: dict[int, int], model: str, *,
                           stream: str, vector_stream: str) -> int:
    """Publish the stored vectors of the events ``seq_of`` maps (old id -> stream sequence); returns how many."""
    found, vectors = await store.vectors(list(seq_of))
    try:
        await asyncio.gather(*(
            js.publish(vector_subject(stream, seq_of[int(i)]), body, stream=vector_stream, headers=headers, timeout=30)
            for i, vector in zip(found.tolist(), vectors, strict=True)
            for body, headers in [encode_vector(seq_of[int(i)], vector, model=model, by="publish-store")]))
    except (nats.errors.Error, nats.js.errors.Error) as exc:
        raise ConfigError(f"the vectors stream {vector_stream} refused a publish ({type(exc).__name__}: {exc}); "
                          "run publish-store again to finish", key="cluster.vector_stream") from None
    return len(found)
