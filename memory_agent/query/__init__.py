"""From a question to an answer: words (:mod:`.text`), time windows (:mod:`.timewindow`), intent and
filters (:mod:`.understand`), hybrid retrieval (:mod:`.retrieval`), the answer (:mod:`.answer`) and
its optional LLM summary (:mod:`.summarizer`)."""

from memory_agent.query.answer import Answer, Answerer, ScoredEvent
from memory_agent.query.retrieval import Hit, HybridRetriever, convex_fusion, reciprocal_rank_fusion
from memory_agent.query.summarizer import OpenAISummarizer
from memory_agent.query.timewindow import parse_window, scan_window
from memory_agent.query.understand import understand

__all__ = [
    "Answer",
    "Answerer",
    "Hit",
    "HybridRetriever",
    "OpenAISummarizer",
    "ScoredEvent",
    "convex_fusion",
    "parse_window",
    "reciprocal_rank_fusion",
    "scan_window",
    "understand",
]
