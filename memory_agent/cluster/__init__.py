"""More than one @memory: the replicated events stream as the source of truth (docs/scaling.md).

- :mod:`~memory_agent.cluster.codec`: what travels on the stream (pure).
- :mod:`~memory_agent.cluster.stream`: the stream, and :class:`StreamAcceptor` (acknowledged once the
  stream has it).
- :mod:`~memory_agent.cluster.applier`: :class:`Applier`, each replica's ordered view of the stream.
- :mod:`~memory_agent.cluster.vectors`: :class:`VectorFeed`, embed once: replicas share vectors.
- :mod:`~memory_agent.cluster.forget`: :class:`StreamForgetter`, forget as an event on the stream.
"""

from memory_agent.cluster.applier import Applier
from memory_agent.cluster.forget import StreamForgetter
from memory_agent.cluster.stream import StreamAcceptor, StreamLimits, ensure_stream, stream_subject
from memory_agent.cluster.vectors import VectorFeed, ensure_vector_stream

__all__ = ["Applier", "StreamAcceptor", "StreamForgetter", "StreamLimits", "VectorFeed", "ensure_stream",
           "ensure_vector_stream", "stream_subject"]
