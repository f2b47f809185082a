"""Replay one LoCoMo conversation through the mesh into @memory, then ask its questions.

    python examples/locomo_replay.py --nats-url nats://127.0.0.1:4222 [--conversation 0] [--questions 20]

LoCoMo (Maharana et al., "Evaluating Very Long-Term Conversational Memory of LLM Agents", ACL 2024;
CC BY-NC 4.0) is read from ../shared/data/locomo/locomo10.json, never copied into this repository.
Each turn becomes a report from the speaker's handle, with the session's date and time as
``occurred_at``; each question of categories 1-4 is asked as a structured question, and the question,
the gold answer and @memory's best evidence are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

from dateutil import parser as dateparser

from mesh import AsyncAgent, Manifest

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo" / "locomo10.json"


def handle_of(speaker: str) -> str:
    """'Caroline' -> 'caroline': a valid mesh handle for a speaker's name."""
    return re.sub(r"[^a-z0-9_-]", "-", speaker.lower()).strip("-") or "speaker"


def turns(conversation: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(speaker, report payload) for every turn, in order; ``occurred_at`` is ISO-8601 (no offset)."""
    out = []
    sessions = sorted(
        (int(key.split("_")[1]), key) for key in conversation if re.fullmatch(r"session_\d+", key)
    )
    for number, key in sessions:
        when = dateparser.parse(conversation[f"{key}_date_time"].replace(" on ", " "), dayfirst=True)
        for turn in conversation[key]:
            payload = {"event": "utterance", "speaker": turn["speaker"], "text": turn["text"],
                       "dia_id": turn["dia_id"], "session": number, "occurred_at": when.isoformat()}
            if turn.get("blip_caption"):
                payload["image_caption"] = turn["blip_caption"]
            out.append((turn["speaker"], payload))
    return out


async def replay(url: str, sample: dict[str, Any], *, questions: int, limit: int) -> None:
    conversation = sample["conversation"]
    speakers = {conversation["speaker_a"], conversation["speaker_b"]}
    agents = {s: AsyncAgent(handle_of(s), servers=url, manifest=Manifest(description=f"LoCoMo speaker {s}"),
                            max_in_flight=256) for s in speakers}
    asker = AsyncAgent("locomo-asker", servers=url, manifest=Manifest(description="asks LoCoMo questions"))
    for agent in (*agents.values(), asker):
        await agent.start()
        await agent.register()
    try:
        sent = turns(conversation)
        gate = asyncio.Semaphore(128)

        async def report(speaker: str, payload: dict[str, Any]) -> None:
            async with gate:
                reply = await agents[speaker].request("memory", json.dumps(payload), content_type="application/json",
                                                      trace_id=f"{sample['sample_id']}-s{payload['session']}", timeout=120)
            if json.loads(reply.payload).get("status") != "stored":
                raise RuntimeError(f"{payload['dia_id']} not stored: {reply.payload}")

        await asyncio.gather(*(report(s, p) for s, p in sent))
        print(f"replayed {len(sent)} turns of {sample['sample_id']} ({' and '.join(sorted(speakers))})\n")
        asked = [qa for qa in sample["qa"] if qa["category"] in (1, 2, 3, 4)][:questions]
        for qa in asked:
            reply = await asker.request("memory", json.dumps({"query": qa["question"], "limit": limit}),
                                        content_type="application/json", timeout=60)
            answer = json.loads(reply.payload)
            print(f"Q: {qa['question']}\ngold: {qa['answer']}  (evidence {', '.join(qa['evidence'])})")
            for event in answer.get("events", []):
                p = event["payload"]
                print(f"  @memory {p.get('dia_id')} {event['occurred_at'][:10]} {p.get('speaker')}: {p.get('text')}")
            print()
    finally:
        for agent in (*agents.values(), asker):
            await agent.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Replay a LoCoMo conversation into @memory and ask its questions.")
    parser.add_argument("--nats-url", default=os.environ.get("MEMORY_AGENT_NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="path of locomo10.json")
    parser.add_argument("--conversation", type=int, default=0, help="which of the 10 conversations (0-9)")
    parser.add_argument("--questions", type=int, default=20, help="how many questions to ask")
    parser.add_argument("--limit", type=int, default=3, help="events to show per answer")
    args = parser.parse_args()
    if not args.data.is_file():
        parser.error(f"{args.data} not found: pass --data with the path of locomo10.json")
    sample = json.loads(args.data.read_text())[args.conversation]
    asyncio.run(replay(args.nats_url, sample, questions=args.questions, limit=args.limit))


if __name__ == "__main__":
    main()
