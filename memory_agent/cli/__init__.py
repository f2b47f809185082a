"""``memory-agent``: run the @memory daemon, or talk to a running one over the mesh.

One typer app (:mod:`memory_agent.cli.common`) with the daemon's commands (:mod:`memory_agent.cli.commands`)
and shared memory's (:mod:`memory_agent.cli.shared_memory`).
"""

from __future__ import annotations

from memory_agent.cli import commands, shared_memory  # noqa: F401  (they register their commands)
from memory_agent.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    """The ``memory-agent`` entry point."""
    app()
