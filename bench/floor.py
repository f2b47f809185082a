"""Where the relevance floor comes from: the cosine of unrelated question/report pairs, on both sets.

    python bench/floor.py [--data ../shared/data/locomo/locomo10.json] [--turns 2000] [--questions 400]

A hit whose only evidence is its cosine with the question is not worth presenting when unrelated text
reaches that cosine as often. Pairs that are unrelated by construction come from crossing the two
labelled sets of different character: the questions of the generated ops set (``bench/opsgen.py``,
seed 11) against LoCoMo's turns, and LoCoMo's questions (categories 1-4) against the ops set's reports,
each text as @memory embeds it (``memory_agent.wire.indexed_text``) with the bundled MiniLM. The script
prints the distribution of both crossings (mean, standard deviation, 95th / 99th / 99.9th percentiles)
and the floor they imply: ``min_score = dense_weight x`` the lower of the two 99th percentiles (a 1%
false-alarm rate for a dense-only match, in the Neyman-Pearson sense: fix the rate of presenting an
unrelated report, then keep every match above it). The lower of the two is taken so that neither
set's recall pays for the other's noise. LoCoMo (CC BY-NC 4.0) is read from ``../shared``, never copied.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

from opsset import generate  # noqa: E402

from memory_agent.config import EmbeddingConfig, RetrievalConfig  # noqa: E402
from memory_agent.embedding.base import load_embedder  # noqa: E402
from memory_agent.wire import indexed_text  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "locomo" / "locomo10.json"
PERCENTILES = (95.0, 99.0, 99.9)


def locomo_texts(path: Path) -> tuple[list[str], list[str]]:
    """LoCoMo's turns as @memory indexes them, and its questions of categories 1-4."""
    turns: list[str] = []
    questions: list[str] = []
    for sample in json.loads(path.read_text()):
        for key, session in sample["conversation"].items():
            if key.startswith("session_") and isinstance(session, list):
                for t in session:
                    payload = {"speaker": t["speaker"], "text": t["text"], "dia_id": t["dia_id"]}
                    if t.get("blip_caption"):
                        payload["image_caption"] = t["blip_caption"]
                    turns.append(indexed_text("utterance", payload))
        questions += [q["question"] for q in sample["qa"] if q.get("category") in (1, 2, 3, 4)]
    return turns, questions


def describe(cosines: np.ndarray) -> dict[str, float]:
    """Mean, standard deviation and the PERCENTILES of ``cosines``."""
    out = {"mean": float(cosines.mean()), "std": float(cosines.std())}
    out.update({f"p{p:g}": float(np.percentile(cosines, p)) for p in PERCENTILES})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="path of locomo10.json")
    parser.add_argument("--turns", type=int, default=2000, help="LoCoMo turns sampled (default 2000)")
    parser.add_argument("--questions", type=int, default=400, help="LoCoMo questions sampled (default 400)")
    parser.add_argument("--seed", type=int, default=11, help="seed of the ops set and of the samples")
    args = parser.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"{args.data}: no such file (pass --data PATH to locomo10.json)")
    ops = generate(args.seed)
    ops_reports = [indexed_text(r.event.strip().lower(), r.payload) for r in ops.reports]
    ops_questions = [q.text for q in ops.questions]
    turns, questions = locomo_texts(args.data)
    rng = np.random.default_rng(args.seed)
    turns = [turns[i] for i in rng.choice(len(turns), min(args.turns, len(turns)), replace=False)]
    questions = [questions[i] for i in rng.choice(len(questions), min(args.questions, len(questions)), replace=False)]
    embedder = load_embedder(EmbeddingConfig(), data_dir=Path(os.environ.get("TMPDIR", "/tmp")) / "floor-bench")
    print(f"embedding {len(ops_reports)} ops reports, {len(ops_questions)} ops questions, {len(turns)} LoCoMo "
          f"turns, {len(questions)} LoCoMo questions with {embedder.name}", flush=True)
    crossings = {
        "ops questions x LoCoMo turns": embedder.encode(ops_questions) @ embedder.encode(turns).T,
        "LoCoMo questions x ops reports": embedder.encode(questions) @ embedder.encode(ops_reports).T,
    }
    print("\n| unrelated pairs | n | mean | std | " + " | ".join(f"p{p:g}" for p in PERCENTILES) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(PERCENTILES))
    p99 = []
    for name, cosines in crossings.items():
        d = describe(cosines.ravel())
        p99.append(d["p99"])
        print(f"| {name} | {cosines.size} | {d['mean']:.3f} | {d['std']:.3f} | "
              + " | ".join(f"{d[f'p{p:g}']:.3f}" for p in PERCENTILES) + " |")
    weight = RetrievalConfig().dense_weight
    print(f"\nfloor = dense_weight ({weight:g}) x min 99th percentile ({min(p99):.3f}) = {weight * min(p99):.3f}; "
          f"configured min_score {RetrievalConfig().min_score:g}")


if __name__ == "__main__":
    main()
