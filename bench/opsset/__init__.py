"""A labelled ops history for @memory: a seeded generator of reports and questions with gold answers.

Used by ``bench/opsgen.py`` (generate, check, sample) and ``bench/opsbench.py`` (run it against a real
daemon). Pure Python, no model: generation and checks take a few seconds.
"""

from .check import check, summary
from .generate import DEFAULT_AS_OF, DEFAULT_SEED, DEFAULT_WEEKS, generate
from .model import KINDS, OpsQuestion, OpsSet, Report, content_stems, report_text
from .questions import trace_shape

__all__ = [
    "DEFAULT_AS_OF",
    "DEFAULT_SEED",
    "DEFAULT_WEEKS",
    "KINDS",
    "OpsQuestion",
    "OpsSet",
    "Report",
    "check",
    "content_stems",
    "generate",
    "report_text",
    "summary",
    "trace_shape",
]
