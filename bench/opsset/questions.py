"""Questions about a generated history, each with its gold answer, of every kind @memory claims.

Kinds (see :data:`opsset.model.KINDS`): ``list`` ("What rollbacks happened in the last 7 days?"),
``count`` ("How many deploys went out yesterday?"), ``window`` (lists whose point is the time phrase:
"What happened on Friday?", "between Nov 3 and Nov 5", "in October"), ``entity`` (a service or a
reporting handle: "What did flake-hunter report last week?"), ``timeline`` (every trace id shape, with
and without the word "trace"), ``why`` ("Why did production roll back on Friday?"), ``ranked`` (a
report described in its own words), ``paraphrase`` (described without any of its words) and
``no_answer`` (things that never happened: unknown topics, services, handles and trace ids, and why
questions about days with no such event). Gold follows the rules of :mod:`opsset.model`.

Question wording follows what README.md says @memory understands (event types as people say them,
handles as reporters, the listed time phrases), so a wrong answer is a failure of @memory, not of an
unreadable question; ``paraphrase`` and ``no_answer`` questions are the exception by design.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .model import OpsQuestion, Report, iso, select, trace_reports, why_choice, window_bounds
from .wording import ABSENT_HANDLES, ABSENT_SERVICES, ABSENT_TOPICS, DEPLOY_CHANGES, STORIES

TARGETS: dict[str, int] = {
    "list": 40, "count": 30, "window": 35, "entity": 35, "timeline": 48, "why": 25, "ranked": 36,
    "paraphrase": 48, "no_answer": 33,
}  # fmt: skip
"""Questions of each kind in a full set (fewer when a small history offers fewer)."""

_NUMBER_WORDS = {"2": "two", "3": "three", "4": "four", "7": "seven", "14": "fourteen"}
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")

LIST_TEMPLATES: dict[str, tuple[str, ...]] = {
    "rollback": ("What rollbacks happened {w}?", "Which services were rolled back {w}?",
                 "Were there any rollbacks {w}?", "List the rollbacks {w}.", "Show me every rollback {w}."),
    "deploy": ("What deploys happened {w}?", "Which deployments went out {w}?", "List the deploys {w}.",
               "Show all deployments {w}."),
    "flaky_test": ("Which tests were flaky {w}?", "What flaky tests were reported {w}?", "List the flaky tests {w}."),
    "test_quarantined": ("Which tests were quarantined {w}?", "What tests got quarantined {w}?",
                         "List the quarantined tests {w}."),
    "anomaly": ("What anomalies were detected {w}?", "Were there any anomalies {w}?", "List the anomalies {w}."),
    "root_cause": ("What root causes were found {w}?", "List the root causes identified {w}."),
    "config_change": ("What config changes happened {w}?", "Which config changes were made {w}?",
                      "List config changes {w}."),
    "incident_opened": ("Which incidents were opened {w}?", "List the incidents opened {w}."),
    "incident_resolved": ("Which incidents were resolved {w}?", "List incidents resolved {w}."),
}
SERVICE_LIST_TEMPLATES: dict[str, tuple[str, ...]] = {
    "rollback": ("What {s} rollbacks happened {w}?", "Which {s} rollbacks were there {w}?"),
    "deploy": ("Which {s} deploys went out {w}?", "List the deployments of {s} {w}.", "What deploys of {s} happened {w}?"),
    "config_change": ("List config changes to {s} {w}.", "What config changes were made to {s} {w}?"),
    "anomaly": ("Were there any anomalies on {s} {w}?", "List the {s} anomalies {w}."),
    "flaky_test": ("Which {s} tests were flaky {w}?",),
}
COUNT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "rollback": ("How many rollbacks were there {w}?", "How many times did we roll back {w}?"),
    "deploy": ("How many deploys went out {w}?", "How many deployments happened {w}?"),
    "flaky_test": ("How many flaky tests were reported {w}?",),
    "test_quarantined": ("How many tests were quarantined {w}?",),
    "anomaly": ("How many anomalies were detected {w}?",),
    "config_change": ("How many config changes were made {w}?", "Number of config changes {w}?"),
    "incident_opened": ("How many incidents were opened {w}?",),
    "": ("How many events were reported {w}?",),
}
SERVICE_COUNT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "deploy": ("How many times was {s} deployed {w}?", "How many {s} deploys went out {w}?"),
    "rollback": ("How often was {s} rolled back {w}?",),
    "config_change": ("How many config changes were made to {s} {w}?",),
    "anomaly": ("How many anomalies did {s} have {w}?",),
}
HANDLE_COUNT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "anomaly": ("How many anomalies did {h} report {w}?",),
    "rollback": ("How many rollbacks did {h} report {w}?",),
    "deploy": ("How many deploys did {h} report {w}?",),
    "flaky_test": ("How many flaky tests did {h} report {w}?",),
}
GENERIC_WINDOW_TEMPLATES = ("What happened {w}?", "What was reported {w}?", "List all events {w}.")
HANDLE_TEMPLATES = ("What did {h} report {w}?", "What did the {h} agent report {w}?", "Show @{h}'s reports {w}.")
HANDLE_EVENT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "anomaly": ("Which anomalies did {h} flag {w}?",),
    "rollback": ("List rollbacks reported by {h} {w}.",),
    "flaky_test": ("Which flaky tests did {h} report {w}?",),
    "deploy": ("What deploys were reported by {h} {w}?",),
    "test_quarantined": ("Which quarantined tests did {h} report {w}?",),
}
SERVICE_TEMPLATES = ("What happened to {s} {w}?", "Show all {s} events {w}.", "What was reported for {s} {w}?")
TIMELINE_WITH_WORD = ("Give me the timeline of trace {t}", "What happened with trace {t}?",
                      "Show the sequence of events for trace {t}.", "Timeline for trace {t}, please")
TIMELINE_BARE = ("Timeline of {t}?", "What happened in {t}?", "Walk me through {t}.", "History of {t}?")
WHY_ROLLBACK = ("Why did {s} roll back {w}?", "Why was {s} rolled back {w}?", "What caused the {s} rollback {w}?")
WHY_ENV = ("Why did {e} roll back {w}?",)
WHY_ANOMALY = ("What caused the {s} anomaly {w}?", "Why was there an anomaly on {s} {w}?")


@dataclass(frozen=True, slots=True)
class _Draft:
    kind: str
    text: str
    gold: tuple[int, ...]
    count: int | None = None
    trace: str | None = None
    spec: dict[str, Any] | None = None
    tags: tuple[str, ...] = ()


class _Phrases:
    """Window rules and the words that say them, relative to ``as_of``."""

    def __init__(self, as_of: float, first_day: date) -> None:
        self.as_of = as_of
        self.today = datetime.fromtimestamp(as_of, tz=UTC).date()
        self.first_day = first_day

    @staticmethod
    def _md(day: date, long: bool = False) -> str:
        month = _MONTHS[day.month - 1]
        return f"{month if long else month[:3]} {day.day}"

    def say(self, rule: str | None, rng: random.Random) -> str:
        """A phrase @memory reads as ``rule`` (README "How questions are answered")."""
        if rule is None:
            return ""
        name, _, arg = rule.partition(":")
        options: dict[str, Sequence[str]] = {
            "today": ["today"], "yesterday": ["yesterday"], "this_week": ["this week"],
            "last_week": ["last week"], "since_monday": ["since Monday"], "this_month": ["this month"],
            "last_month": ["last month"],
        }  # fmt: skip
        if name in options:
            return rng.choice(options[name])
        if name == "rolling_days":
            choices = [f"in the last {arg} days", f"over the past {_NUMBER_WORDS.get(arg, arg)} days"]
            if arg == "7":
                choices.append("in the past week")
            return rng.choice(choices)
        if name == "rolling_hours":
            return rng.choice([f"in the last {arg} hours", f"in the past {arg} hours"])
        if name == "weekday":
            return rng.choice([f"on {arg.capitalize()}", f"last {arg.capitalize()}"])
        if name == "days_ago":
            return rng.choice([f"{arg} days ago", f"{_NUMBER_WORDS.get(arg, arg)} days ago"])
        if name == "date":
            day = date.fromisoformat(arg)
            return rng.choice([f"on {self._md(day)}", f"on {arg}", f"on {self._md(day, True)}"])
        if name == "month":
            return f"in {_MONTHS[int(arg[5:7]) - 1]}"
        if name == "between":
            a, b = (date.fromisoformat(x) for x in arg.split(":"))
            return rng.choice([f"between {self._md(a)} and {self._md(b)}",
                               f"from {self._md(a, True)} to {self._md(b, True)}"])
        raise ValueError(f"unknown window rule {rule!r}")

    def common(self) -> list[str]:
        return ["today", "yesterday", "this_week", "last_week", "rolling_days:7", "rolling_days:3",
                "rolling_hours:24", "since_monday", "rolling_days:14"]

    def calendar(self, rng: random.Random) -> list[str]:
        """Weekday, date, month and range rules that fall inside the history."""
        rules = ["weekday:friday", "weekday:monday", "weekday:tuesday", "weekday:wednesday", "days_ago:3",
                 "last_month", "this_month"]
        days = [self.first_day + timedelta(days=n) for n in range((self.today - self.first_day).days)]
        older = [d for d in days if 8 <= (self.today - d).days <= 30 and d.weekday() < 5]
        for day in rng.sample(older, min(3, len(older))):
            rules.append(f"date:{day.isoformat()}")
        months = sorted({(d.year, d.month) for d in days})
        rules += [f"month:{y:04d}-{m:02d}" for y, m in months]
        spans = [d for d in days if 10 <= (self.today - d).days <= 35 and d.weekday() == 0]
        for monday in rng.sample(spans, min(2, len(spans))):
            length = rng.choice([2, 4])
            rules.append(f"between:{monday.isoformat()}:{(monday + timedelta(days=length)).isoformat()}")
        return [r for r in rules if self.inside(r)]

    def inside(self, rule: str) -> bool:
        """Does the window start within the history (not before its first day, not after ``as_of``)?"""
        since, _until = window_bounds(rule, self.as_of)
        first = datetime(self.first_day.year, self.first_day.month, self.first_day.day, tzinfo=UTC).timestamp()
        return since is None or first <= since <= self.as_of or rule.startswith("month:") or rule == "last_month"

    def rule_for_day(self, day: date, rng: random.Random) -> str:
        """A window rule naming the day ``day`` (today, yesterday, a weekday of the last week, or the date)."""
        back = (self.today - day).days
        if back == 0:
            return "today"
        if back == 1:
            return "yesterday"
        if back < 7:
            return f"weekday:{day.strftime('%A').lower()}"
        return f"date:{day.isoformat()}"


def _fill(template: str, **values: str) -> str:
    text = template
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return " ".join(text.split()).replace(" ?", "?").replace(" .", ".")


def _indices(reports: Iterable[Report]) -> tuple[int, ...]:
    return tuple(r.index for r in reports)


class _Builder:
    def __init__(self, rng: random.Random, reports: Sequence[Report], as_of: float) -> None:
        self.rng = rng
        self.reports = reports
        self.as_of = as_of
        first = min(r.occurred_at for r in reports)
        self.phrases = _Phrases(as_of, datetime.fromtimestamp(first, tz=UTC).date())
        self.services = sorted({r.service for r in reports if r.service})
        self.handles = sorted({r.handle for r in reports})
        self.by_event: dict[str, list[Report]] = {}
        for r in reports:
            self.by_event.setdefault(r.event, []).append(r)

    def select(self, spec: dict[str, Any]) -> list[Report]:
        return select(self.reports, spec, self.as_of)

    def _exact(self, kind: str, template: str, spec: dict[str, Any], *, tags: Sequence[str] = (),
               **values: str) -> _Draft:
        window = self.phrases.say(spec.get("window"), self.rng)
        text = _fill(template, w=window, **values)
        gold = self.select(spec)
        count = len(gold) if kind == "count" else None
        rule = str(spec.get("window") or "none").split(":")[0]
        return _Draft(kind, text, _indices(gold), count, None, spec, (f"window={rule}", *tags))

    # --- kinds -------------------------------------------------------------------------------------

    def lists(self) -> list[_Draft]:
        out: list[_Draft] = []
        rules = self.phrases.common()
        for event, templates in LIST_TEMPLATES.items():
            for rule in rules:
                out.append(self._exact("list", self.rng.choice(templates), {"event": [event], "window": rule}))
        for event, templates in SERVICE_LIST_TEMPLATES.items():
            services = sorted({r.service for r in self.by_event.get(event, []) if r.service})
            for service in self.rng.sample(services, min(4, len(services))):
                rule = self.rng.choice([*rules, "last_month", "this_month"])
                spec = {"event": [event], "service": [service], "window": rule}
                out.append(self._exact("list", self.rng.choice(templates), spec, tags=("service",), s=service))
        return out

    def counts(self) -> list[_Draft]:
        out: list[_Draft] = []
        rules = self.phrases.common() + self.phrases.calendar(self.rng)
        for event, templates in COUNT_TEMPLATES.items():
            for rule in self.rng.sample(rules, 5):
                spec: dict[str, Any] = {"window": rule}
                if event:
                    spec["event"] = [event]
                out.append(self._exact("count", self.rng.choice(templates), spec))
        for event, templates in SERVICE_COUNT_TEMPLATES.items():
            services = sorted({r.service for r in self.by_event.get(event, []) if r.service})
            for service in self.rng.sample(services, min(3, len(services))):
                spec = {"event": [event], "service": [service], "window": self.rng.choice(rules)}
                out.append(self._exact("count", self.rng.choice(templates), spec, tags=("service",), s=service))
        for event, templates in HANDLE_COUNT_TEMPLATES.items():
            handles = sorted({r.handle for r in self.by_event.get(event, [])})
            for handle in self.rng.sample(handles, min(2, len(handles))):
                spec = {"event": [event], "from_handle": [handle], "window": self.rng.choice(rules)}
                out.append(self._exact("count", self.rng.choice(templates), spec, tags=("handle",), h=handle))
        return out

    def windows(self) -> list[_Draft]:
        out: list[_Draft] = []
        calendar = self.phrases.calendar(self.rng)
        for rule in [*calendar, "today", "yesterday", "this_week", "last_week", "since_monday"]:
            out.append(self._exact("window", self.rng.choice(GENERIC_WINDOW_TEMPLATES), {"window": rule},
                                   tags=("all events",)))
        for rule in calendar:
            for event in self.rng.sample(["rollback", "deploy", "anomaly", "config_change", "test_quarantined",
                                          "flaky_test", "incident_opened"], 3):
                out.append(self._exact("window", self.rng.choice(LIST_TEMPLATES[event]),
                                       {"event": [event], "window": rule}))
        return out

    def entities(self) -> list[_Draft]:
        out: list[_Draft] = []
        rules = self.phrases.common() + self.phrases.calendar(self.rng)
        for handle in self.handles:
            spec = {"from_handle": [handle], "window": self.rng.choice(rules)}
            out.append(self._exact("entity", self.rng.choice(HANDLE_TEMPLATES), spec, tags=("handle",), h=handle))
            events = sorted({r.event for r in self.reports if r.handle == handle} & set(HANDLE_EVENT_TEMPLATES))
            for event in events:
                spec = {"event": [event], "from_handle": [handle], "window": self.rng.choice(rules)}
                out.append(self._exact("entity", self.rng.choice(HANDLE_EVENT_TEMPLATES[event]), spec,
                                       tags=("handle",), h=handle))
        for service in self.services:
            spec = {"service": [service], "window": self.rng.choice(rules)}
            out.append(self._exact("entity", self.rng.choice(SERVICE_TEMPLATES), spec, tags=("service",), s=service))
        return out

    def timelines(self) -> list[_Draft]:
        out: list[_Draft] = []
        by_trace: dict[str, list[Report]] = {}
        for r in self.reports:
            by_trace.setdefault(r.trace_id, []).append(r)
        by_shape: dict[str, list[str]] = {}
        for trace in sorted(by_trace):
            by_shape.setdefault(trace_shape(trace), []).append(trace)
        for shape, traces in sorted(by_shape.items()):
            # longer traces first (incidents, flaky tests), a single-report trace or two as well
            multi = [t for t in traces if len(by_trace[t]) > 1]
            single = [t for t in traces if len(by_trace[t]) == 1]
            picked = self.rng.sample(multi, min(5, len(multi)))
            picked += self.rng.sample(single, min(6 - len(picked), len(single)))
            for n, trace in enumerate(picked):
                with_word = n % 2 == 0
                template = self.rng.choice(TIMELINE_WITH_WORD if with_word else TIMELINE_BARE)
                gold = trace_reports(self.reports, trace)
                out.append(_Draft("timeline", _fill(template, t=trace), _indices(gold), None, trace, {"trace": [trace]},
                                  (f"shape={shape}", "trace word" if with_word else "bare id")))
        return out

    def whys(self) -> list[_Draft]:
        out: list[_Draft] = []

        def add(template: str, spec: dict[str, Any], tags: tuple[str, ...], **values: str) -> None:
            candidates = self.select(spec)
            chosen = why_choice(candidates, self.reports)
            if chosen is None:
                return
            # the chosen report and any other matching report of its trace (an anomaly seen by two agents)
            gold = [chosen.index] + [c.index for c in candidates if c.trace_id == chosen.trace_id and c is not chosen]
            window = self.phrases.say(spec.get("window"), self.rng)
            text = _fill(template, w=window, **values)
            spec = {**spec, "candidates": len(candidates)}
            out.append(_Draft("why", text, tuple(gold), None, chosen.trace_id, spec, tags))

        rollbacks = sorted(self.by_event.get("rollback", []), key=lambda r: r.occurred_at)
        for r in self.rng.sample(rollbacks, len(rollbacks)):
            if r.service is None:
                continue
            day = datetime.fromtimestamp(r.occurred_at, tz=UTC).date()
            rule = self.phrases.rule_for_day(day, self.rng)
            add(self.rng.choice(WHY_ROLLBACK), {"event": ["rollback"], "service": [r.service], "window": rule},
                ("rollback", f"window={rule.split(':')[0]}"), s=r.service)
        latest = rollbacks[-1].service if rollbacks else None
        for service in sorted({r.service for r in rollbacks if r.service}, key=lambda s: (s != latest, s)):
            add("Why did we roll back {s}?", {"event": ["rollback"], "service": [service]},
                ("rollback", "window=none"), s=service)
        for rule in ("weekday:friday", "today", "last_week", "rolling_days:7"):
            for env in ("production", "staging"):
                add(WHY_ENV[0], {"event": ["rollback"], "env": [env], "window": rule},
                    ("rollback", "env", f"window={rule.split(':')[0]}"), e=env)
        for q in self.by_event.get("test_quarantined", []):
            test = str(q.payload.get("test", ""))
            name = test.split("::")[-1]
            said = name if name.startswith("test_") else f"the '{name}' test"
            add("Why was {n} quarantined?", {"event": ["test_quarantined"], "payload": {"test": test}},
                ("quarantine",), n=said)
        anomalies = self.by_event.get("anomaly", [])
        for a in self.rng.sample(anomalies, len(anomalies)):
            if a.meta.get("part") != "symptom" or a.service is None:
                continue
            day = datetime.fromtimestamp(a.occurred_at, tz=UTC).date()
            rule = self.phrases.rule_for_day(day, self.rng)
            add(self.rng.choice(WHY_ANOMALY), {"event": ["anomaly"], "service": [a.service], "window": rule},
                ("anomaly", f"window={rule.split(':')[0]}"), s=a.service)
        return out

    def story_reports(self, story: str, part: str) -> list[Report]:
        """The reports a question about a story's ``part`` is about: its root cause for ``"cause"``; for
        ``"symptom"`` its anomaly reports (one or two agents) and the incident's opening, whose title
        names the symptom."""
        parts = {part, "opened"} if part == "symptom" else {part}
        found = [r for r in self.reports if r.meta.get("story") == story and r.meta.get("part") in parts]
        return sorted(found, key=lambda r: (r.meta.get("part") == "opened", r.occurred_at))

    def ranked(self) -> list[_Draft]:
        """Story reports asked about in their own words (both parts of every story), then deploys by
        their change, where that service got that change once."""
        out: list[_Draft] = []
        for story in STORIES:
            for part, ask in (("symptom", story.ask_symptom), ("cause", story.ask_cause)):
                gold = self.story_reports(story.key, part)
                if gold:
                    out.append(_Draft("ranked", ask, _indices(gold), None, gold[0].trace_id,
                                      {"story": story.key, "part": part}, (f"story {part}",)))
        asks = dict(DEPLOY_CHANGES)
        seen: dict[tuple[str, str], list[Report]] = {}
        for r in self.by_event.get("deploy", []):
            change = r.meta.get("change")
            if change and asks.get(change) and r.service:
                seen.setdefault((r.service, change), []).append(r)
        for (service, change), found in sorted(seen.items()):
            if len(found) == 1:
                text = _fill(asks[change], service=service)
                out.append(_Draft("ranked", text, (found[0].index,), None, found[0].trace_id,
                                  {"service": [service], "change": change}, ("deploy change",)))
        self.rng.shuffle(out)
        return out

    def paraphrases(self) -> list[_Draft]:
        out: list[_Draft] = []
        for story in STORIES:
            for part, text in (("symptom", story.para_symptom), ("cause", story.para_cause)):
                gold = self.story_reports(story.key, part)
                if gold:
                    out.append(_Draft("paraphrase", text, _indices(gold), None, gold[0].trace_id,
                                      {"story": story.key, "part": part}, (f"story {part}",)))
        return out

    def no_answers(self) -> list[_Draft]:
        out: list[_Draft] = []
        for text, words in ABSENT_TOPICS:
            out.append(_Draft("no_answer", text, (), None, None, {"absent_words": list(words)}, ("topic",)))
        templates = ("Why did {s} roll back yesterday?", "How many deploys did {s} get last week?",
                     "What happened to {s} this week?")
        for service, template in zip(ABSENT_SERVICES, templates, strict=True):
            out.append(_Draft("no_answer", _fill(template, s=service), (), 0 if "How many" in template else None,
                              None, {"absent_service": service}, ("service",)))
        templates = ("What did {h} report this week?", "Anything flagged by the {h} agent this week?",
                     "Show @{h}'s alerts from yesterday.")
        for handle, template in zip(ABSENT_HANDLES, templates, strict=True):
            out.append(_Draft("no_answer", _fill(template, h=handle), (), None, None, {"absent_handle": handle},
                              ("handle",)))
        traces = sorted({r.trace_id for r in self.reports})
        known = {t.lower() for t in traces}
        by_shape: dict[str, list[str]] = {}
        for trace in traces:
            by_shape.setdefault(trace_shape(trace), []).append(trace)
        for n, (shape, pool) in enumerate(sorted(by_shape.items())):
            near = near_miss(self.rng.choice(pool), known, self.rng)
            template = (TIMELINE_WITH_WORD if n % 2 == 0 else TIMELINE_BARE)[n % 4]
            out.append(_Draft("no_answer", _fill(template, t=near), (), None, near, {"absent_trace": near},
                              ("trace", f"shape={shape}")))
        # why questions about a day with no such rollback, for services that do roll back
        rolled = sorted({r.service for r in self.by_event.get("rollback", []) if r.service})
        for service in self.rng.sample(rolled, len(rolled)):
            for rule in ("weekday:sunday", "weekday:saturday", "yesterday", "today"):
                spec = {"event": ["rollback"], "service": [service], "window": rule}
                if not self.select(spec):
                    text = _fill("Why did {s} roll back {w}?", s=service, w=self.phrases.say(rule, self.rng))
                    out.append(_Draft("no_answer", text, (), None, None, {**spec, "empty": True}, ("why empty window",)))
                    break
            if sum(1 for d in out if "why empty window" in d.tags) >= 3:
                break
        return out


def trace_shape(trace: str) -> str:
    """Which of :data:`opsset.model.TRACE_SHAPES` a generated trace id has."""
    if trace.startswith("INC-"):
        return "inc"
    if trace.startswith("req_"):
        return "req"
    if trace.startswith("rel-"):
        return "release"
    if trace.startswith("01J") and len(trace) == 26:
        return "ulid"
    if trace.startswith("t-"):
        return "tnum" if trace[2:].isdigit() else "thex"
    if len(trace) == 36 and trace.count("-") == 4:
        return "uuid"
    return "hex8"


def near_miss(trace: str, known: set[str], rng: random.Random) -> str:
    """``trace`` with its last letter or digit changed: an id of the same shape that is not stored."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ" if trace.startswith("01J") else "0123456789abcdef"
    for _ in range(100):
        last = trace[-1]
        pool = "0123456789" if last.isdigit() and (trace.startswith(("INC-", "rel-")) or trace[2:].isdigit()) else alphabet
        candidate = trace[:-1] + rng.choice([c for c in pool if c != last])
        if candidate.lower() not in known:
            return candidate
    raise ValueError(f"no near miss of {trace!r} is free")


def _take(drafts: list[_Draft], n: int, rng: random.Random, *, max_empty: float = 0.15) -> list[_Draft]:
    """``n`` drafts with distinct texts (at most ``max_empty`` of them with an empty gold), in a seeded order."""
    seen: set[str] = set()
    unique = []
    for d in drafts:
        if d.text.lower() not in seen:
            seen.add(d.text.lower())
            unique.append(d)
    rng.shuffle(unique)
    full = [d for d in unique if d.gold or d.kind == "no_answer"]
    empty = [d for d in unique if not d.gold and d.kind != "no_answer"]
    n_empty = min(len(empty), int(n * max_empty))
    return full[: n - n_empty] + empty[:n_empty]


def make_questions(rng: random.Random, reports: Sequence[Report], *, as_of: float,
                   targets: dict[str, int] | None = None) -> list[OpsQuestion]:
    """The question set for ``reports`` at ``as_of``: up to ``targets[kind]`` questions of each kind."""
    targets = {**TARGETS, **(targets or {})}
    b = _Builder(rng, reports, as_of)
    makers: dict[str, Callable[[], list[_Draft]]] = {
        "list": b.lists, "count": b.counts, "window": b.windows, "entity": b.entities, "timeline": b.timelines,
        "why": b.whys, "ranked": b.ranked, "paraphrase": b.paraphrases, "no_answer": b.no_answers,
    }  # fmt: skip
    taken: list[_Draft] = []
    texts: set[str] = set()
    for kind, make in makers.items():
        drafts = [d for d in make() if d.text.lower() not in texts]
        if kind in ("paraphrase", "no_answer"):
            chosen = drafts[: targets[kind]]
        elif kind in ("timeline", "why", "ranked"):
            chosen = _spread(drafts, targets[kind], key=_STRATA[kind])
        else:
            chosen = _take(drafts, targets[kind], rng)
        texts.update(d.text.lower() for d in chosen)
        taken += chosen
    when = iso(as_of)
    return [
        OpsQuestion(f"q{n:04d}", d.kind, d.text, when, d.gold, d.count, d.trace, d.spec or {}, d.tags)  # type: ignore[arg-type]
        for n, d in enumerate(taken, start=1)
    ]


_STRATA: dict[str, Callable[[_Draft], str]] = {
    "timeline": lambda d: d.tags[0],  # the trace shape
    "why": lambda d: " ".join(t for t in d.tags if not t.startswith("window=") or t == "window=none"),
    "ranked": lambda d: "story" if d.tags[0].startswith("story") else d.tags[0],
}


def _spread(drafts: list[_Draft], n: int, *, key: Callable[[_Draft], str]) -> list[_Draft]:
    """Up to ``n`` drafts taking each stratum (``key``: trace shape, why subject, ...) in turn, in the
    order the drafts come, so every stratum is asked about."""
    strata: dict[str, list[_Draft]] = {}
    seen: set[str] = set()
    for d in drafts:
        if (d.gold or d.kind == "no_answer") and d.text.lower() not in seen:
            seen.add(d.text.lower())
            strata.setdefault(key(d), []).append(d)
    out: list[_Draft] = []
    while len(out) < n and any(strata.values()):
        for name in sorted(strata):
            if strata[name] and len(out) < n:
                out.append(strata[name].pop(0))
    return out
