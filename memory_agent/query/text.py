"""Tokenising, stop words and stemming shared by question understanding and the FTS query builder.

Tokens follow SQLite FTS5's default ``unicode61`` tokenizer: maximal runs of Unicode letters and digits,
lower-cased; everything else (spaces, punctuation, ``-``, ``_``, ``@``) separates tokens. So
``"@test-runner's api_gateway"`` gives ``["test", "runner", "s", "api", "gateway"]``.

``stem`` is the classic Porter (1980) suffix stripper, written here because matching how people speak of
event types ("rolled back", "deployments", "anomalies") is this package's core domain and no stemmer
package is installed. It maps inflections onto one key (``stem("deployments") == stem("deploy")``);
stems are keys, not words (``stem("anomaly") == "anomali"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["STOPWORDS", "Token", "clip", "split_name", "stem", "tokenize", "tokenize_spans", "word_set"]


def word_set(text: str) -> frozenset[str]:
    """A set of words written as one space-separated string (how word lists are written here)."""
    return frozenset(text.split())


_TOKEN_RE = re.compile(r"[^\W_]+")

#: English function words (articles, pronouns, prepositions, auxiliaries, conjunctions, quantifiers: the
#: classic SMART/NLTK kind of list) plus the fragments of contractions the tokenizer leaves ("didn't" ->
#: "didn", "t"), lower case as ``tokenize`` returns them.
#: Dropped from full-text queries (:func:`memory_agent.store.sql.fts_phrases`) and from the words that
#: decide whether a question names anything (:mod:`memory_agent.query.answer`). The package's one list.
STOPWORDS: frozenset[str] = word_set(
    "a about above after again against all also am an and any are aren as at be because been "
    "before being below between both but by can could did didn do does doesn doing don down "
    "during each either else ever every few for from further had hadn has hasn have haven "
    "having he her here hers herself him himself his how i if in into is isn it its itself "
    "just let me might many more most much must mustn my myself no nor not now of off on once only or "
    "other our ours ourselves out over own same shall she should shouldn so some such t "
    "than that the their theirs them themselves then there these they this those through to "
    "too under until up upon us very was wasn we were weren what whatever when where whether "
    "which while who whom whose why will with within without won would wouldn you your yours "
    "yourself yourselves s d ll m o re ve y"
)


@dataclass(frozen=True, slots=True)
class Token:
    """One token: ``text`` lower-cased, ``[start, end)`` its character span in the original string."""

    text: str
    start: int
    end: int


def tokenize_spans(text: str) -> list[Token]:
    """Tokens of ``text`` with their spans (see the module docstring for what a token is). Linear time."""
    return [Token(m.group().lower(), m.start(), m.end()) for m in _TOKEN_RE.finditer(text)]


def tokenize(text: str) -> list[str]:
    """Lower-cased tokens of ``text``, as FTS5 ``unicode61`` would split it; stop words are kept."""
    return [m.group().lower() for m in _TOKEN_RE.finditer(text)]


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, the last one an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def split_name(name: str) -> tuple[str, ...]:
    """The tokens of a stored name: ``"@test-runner"`` → ``("test", "runner")``, ``"flaky_test"`` →
    ``("flaky", "test")``, ``"rollback"`` → ``("rollback",)``."""
    return tuple(tokenize(name))


# --- Porter stemmer ---------------------------------------------------------------------------------

_MAX_STEM_LEN = 40  # longer "words" (hashes, base64, fuzz) are returned unchanged: no meaning to strip


def _cons(w: str) -> list[bool]:
    """Per letter: is it a consonant? ``y`` is a consonant at the start or after a vowel."""
    flags: list[bool] = []
    for i, c in enumerate(w):
        if c in "aeiou":
            flags.append(False)
        elif c == "y":
            flags.append(i == 0 or not flags[i - 1])
        else:
            flags.append(True)
    return flags


def _measure(stem_: str) -> int:
    """Porter's m: the number of vowel-run→consonant-run transitions in ``stem_``."""
    m = 0
    seen_vowel = False
    for is_cons in _cons(stem_):
        if not is_cons:
            seen_vowel = True
        elif seen_vowel:
            m += 1
            seen_vowel = False
    return m


def _has_vowel(stem_: str) -> bool:
    return not all(_cons(stem_))


def _double_cons(w: str) -> bool:
    return len(w) >= 2 and w[-1] == w[-2] and _cons(w)[-1]


def _cvc(w: str) -> bool:
    """Ends consonant-vowel-consonant, the last not w, x or y (e.g. ``hop``, not ``snow``)."""
    if len(w) < 3:
        return False
    f = _cons(w)
    return f[-3] and not f[-2] and f[-1] and w[-1] not in "wxy"


def _step1ab(w: str) -> str:
    if w.endswith(("sses", "ies")):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith("ss"):
        w = w[:-1]
    if w.endswith("eed"):
        if _measure(w[:-3]) > 0:
            w = w[:-1]
        return w
    for suffix in ("ed", "ing"):
        if w.endswith(suffix) and _has_vowel(w[: -len(suffix)]):
            w = w[: -len(suffix)]
            if w.endswith(("at", "bl", "iz")):
                return w + "e"
            if _double_cons(w) and w[-1] not in "lsz":
                return w[:-1]
            if _measure(w) == 1 and _cvc(w):
                return w + "e"
            return w
    return w


def _step1c(w: str) -> str:
    if w.endswith("y") and _has_vowel(w[:-1]):
        return w[:-1] + "i"
    return w


_STEP2 = sorted(
    {
        "ational": "ate", "tional": "tion", "enci": "ence", "anci": "ance", "izer": "ize", "bli": "ble",
        "alli": "al", "entli": "ent", "eli": "e", "ousli": "ous", "ization": "ize", "ation": "ate",
        "ator": "ate", "alism": "al", "iveness": "ive", "fulness": "ful", "ousness": "ous", "aliti": "al",
        "iviti": "ive", "biliti": "ble", "logi": "log",
    }.items(),
    key=lambda kv: -len(kv[0]),
)  # fmt: skip
_STEP3 = sorted(
    {"icate": "ic", "ative": "", "alize": "al", "iciti": "ic", "ical": "ic", "ful": "", "ness": ""}.items(),
    key=lambda kv: -len(kv[0]),
)
_STEP4 = sorted(
    word_set("al ance ence er ic able ible ant ement ment ent ion ou ism ate iti ous ive ize"),
    key=lambda s: -len(s),
)


def _replace_longest(w: str, rules: list[tuple[str, str]], min_m: int) -> str:
    """Apply the rule of the longest matching suffix if the remaining stem's m exceeds ``min_m - 1``."""
    for suffix, repl in rules:
        if w.endswith(suffix):
            base = w[: -len(suffix)]
            return base + repl if _measure(base) >= min_m else w
    return w


def _step4(w: str) -> str:
    for suffix in _STEP4:
        if w.endswith(suffix):
            base = w[: -len(suffix)]
            if _measure(base) > 1 and (suffix != "ion" or base.endswith(("s", "t"))):
                return base
            return w
    return w


def _step5(w: str) -> str:
    if w.endswith("e"):
        base = w[:-1]
        m = _measure(base)
        if m > 1 or (m == 1 and not _cvc(base)):
            w = base
    if w.endswith("ll") and _measure(w) > 1:
        w = w[:-1]
    return w


@lru_cache(maxsize=16384)
def stem(word: str) -> str:
    """Porter stem of one lower-case token: ``"rolled"``/``"rolling"`` → ``"roll"``,
    ``"deployments"``/``"deploys"`` → ``"deploi"``, ``"quarantined"``/``"quarantine"`` → ``"quarantin"``.

    Words of one or two letters, words over 40 characters, and words with anything but ``a-z`` are
    returned unchanged (lower-cased). Never raises.
    """
    w = word.lower()
    if len(w) <= 2 or len(w) > _MAX_STEM_LEN or not w.isascii() or not w.isalpha():
        return w
    w = _step1ab(w)
    w = _step1c(w)
    w = _replace_longest(w, _STEP2, 1)
    w = _replace_longest(w, _STEP3, 1)
    w = _step5(_step4(w))
    # Not in Porter: step 1c turns a final y into i only before other suffixes are stripped, so
    # "deploy" -> "deploi" but "deployment" -> "deploy"; finishing with the same rewrite joins them.
    return w[:-1] + "i" if w.endswith("y") and len(w) > 2 else w
