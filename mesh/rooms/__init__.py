"""Rooms on JetStream: records with the rules (``record``), their KV store (``store``), the wire form of an
event (``wire``), members' copies and replays (``feed``), and the operations an agent uses (``service``)."""

from .feed import RoomFeed
from .record import Change, RoomRecord
from .service import Rooms
from .store import RoomStore
from .wire import decode_room_event, encode_room_event

__all__ = ["Change", "RoomFeed", "RoomRecord", "RoomStore", "Rooms", "decode_room_event", "encode_room_event"]
