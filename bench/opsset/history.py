"""A seeded simulation of an ops history: deploys, rollbacks, flaky and quarantined tests, anomalies, root
causes, config changes and incidents, reported by the agents of a mesh over several weeks.

What happens (all times UTC, busy on weekdays in working hours, quieter at night and at weekends):

* **deploys**, 4-8 per weekday and 0-2 per weekend day, each on its own trace (a pipeline id);
* **incidents**, one per story of :mod:`opsset.wording` (24): a deploy, then an anomaly, the incident
  opened, a rollback (or a config change or hotfix deploy), the root cause and the incident resolved,
  all on the incident's trace except the deploy; one incident happens today, one on the Friday before
  ``as_of`` in production; a few anomalies are reported twice by two agents;
* **minor incidents** (anomaly then rollback, no root cause), **lone rollbacks** (no anomaly or root
  cause on their trace; one of them for the service of today's incident earlier this week), **lone
  anomalies** that resolve themselves, **config changes**;
* **flaky tests**: each test flakes 1-6 times on its own tracking trace; most that flake three times are
  quarantined on the same trace.

Reporting: most reports reach @memory within 90 seconds, some minutes to hours late, root causes often
days late (written up after the postmortem), so the send order is not the ``occurred_at`` order.
``occurred_at`` is written as ISO-8601 with ``Z``, with an offset, with milliseconds, without a zone
(read as UTC) or as unix seconds. About 60% of reports carry ``trace_id`` in the payload, the rest
only on the envelope.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from .model import Report, iso
from .wording import (
    CONFIG_CHANGES,
    CONFIG_TEMPLATES,
    DEPLOY_CHANGES,
    DEPLOY_TEMPLATES,
    ENVS,
    FLAKY_REASONS,
    LONE_ANOMALIES,
    QUARANTINE_REASONS,
    REPORTERS,
    RESOLVED_TEMPLATES,
    ROLLBACK_REASONS,
    SERVICES,
    STORIES,
    TESTS,
    Story,
)

MINUTE = 60.0
HOUR = 3600.0
DAY = 86_400.0
# Services do not deploy equally often (weights, in SERVICES order).
_DEPLOY_WEIGHTS = (9, 8, 7, 5, 4, 4, 5, 4, 4, 3, 4, 2, 3, 4, 3, 2, 2, 3)
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_HEX = "0123456789abcdef"


@dataclass(slots=True)
class _Event:
    """One event before delivery: its fields, in the order they are written."""

    event: str
    handle: str
    trace: str
    at: float
    fields: dict[str, Any]
    story: str = ""
    part: str = ""
    late: float | None = None  # forced reporting delay in seconds
    extra: dict[str, Any] = field(default_factory=dict)  # more of the generator's record (meta)


@dataclass(slots=True)
class _World:
    rng: random.Random
    start: date
    as_of: float
    traces: set[str] = field(default_factory=set)
    events: list[_Event] = field(default_factory=list)

    # --- names ---------------------------------------------------------------------------------------

    def pick(self, weighted: Sequence[tuple[str, int]]) -> str:
        return self.rng.choices([n for n, _ in weighted], [w for _, w in weighted])[0]

    def reporter(self, event: str) -> str:
        return self.pick(REPORTERS[event])

    def _hex(self, n: int) -> str:
        while True:  # at least one letter and one digit, so it reads as an id, not a number or word
            text = "".join(self.rng.choice(_HEX) for _ in range(n))
            if any(c.isdigit() for c in text) and any(c.isalpha() for c in text):
                return text

    def trace(self, shapes: Sequence[tuple[str, int]], when: float) -> str:
        """A new trace id of one of ``shapes`` (weighted), unique in the history (case-insensitively)."""
        while True:
            shape = self.pick(shapes)
            if shape == "tnum":
                value = f"t-{self.rng.randint(10, 9999)}"
            elif shape == "thex":
                value = f"t-{self._hex(6)}"
            elif shape == "req":
                value = f"req_{self._hex(6)}"
            elif shape == "hex8":
                value = self._hex(8)
            elif shape == "uuid":
                value = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
            elif shape == "inc":
                value = f"INC-{self.rng.randint(1000, 9999)}"
            elif shape == "ulid":
                value = "01J" + "".join(self.rng.choice(_CROCKFORD) for _ in range(23))
            else:  # release
                day = datetime.fromtimestamp(when, tz=UTC).date()
                value = f"rel-{day.isoformat()}-{self.rng.randint(1, 9)}"
            if value.lower() not in self.traces:
                self.traces.add(value.lower())
                return value

    # --- times ---------------------------------------------------------------------------------------

    def days(self) -> list[date]:
        last = datetime.fromtimestamp(self.as_of, tz=UTC).date()
        return [self.start + timedelta(days=n) for n in range((last - self.start).days + 1)]

    def moment(self, day: date, *, working: float = 0.85) -> float:
        """A time on ``day``: working hours (08-19) with probability ``working``, else any hour; on
        ``as_of``'s day, before ``as_of``."""
        base = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        hour = self.rng.uniform(8, 19) if self.rng.random() < working else self.rng.uniform(0, 24)
        at = round(base + hour * HOUR)
        if at > self.as_of - 5 * MINUTE:
            at = round(self.rng.uniform(base, self.as_of - 5 * MINUTE))
        return at

    def add(self, event: _Event) -> _Event:
        event.at = float(round(event.at))  # whole seconds; reporters add milliseconds or not (see deliver)
        self.events.append(event)
        return event


_DEPLOY_TRACES = (("release", 30), ("uuid", 20), ("hex8", 20), ("ulid", 15), ("tnum", 15))
_INCIDENT_TRACES = (("inc", 35), ("uuid", 15), ("thex", 15), ("tnum", 15), ("req", 10), ("hex8", 10))
_LONE_TRACES = (("req", 30), ("uuid", 20), ("hex8", 20), ("thex", 20), ("tnum", 10))
_TEST_TRACES = (("thex", 30), ("req", 25), ("hex8", 20), ("ulid", 25))


def _deploy(w: _World, service: str, at: float, *, env: str = "", trace: str = "", summary: str = "",
            handle: str = "", story: str = "", part: str = "deploy") -> _Event:
    rng = w.rng
    env = env or w.pick(ENVS)
    handle = handle or w.reporter("deploy")
    extra: dict[str, Any] = {}
    if not summary:  # written once the version is known (see _versions)
        change = rng.choice(DEPLOY_CHANGES)[0]
        summary = rng.choice(DEPLOY_TEMPLATES).replace("{change}", change).replace("{env}", env).replace(
            "{service}", service)
        extra["change"] = change
    fields: dict[str, Any] = {"service": service, "env": env, "version": "", "summary": summary}
    if handle == "ci-runner":
        fields["pipeline"] = f"#{rng.randint(40000, 49999)}"
        fields["commit"] = w._hex(7)
    elif handle == "release-manager":
        fields["ticket"] = f"REL-{rng.randint(100, 999)}"
    return w.add(_Event("deploy", handle, trace or w.trace(_DEPLOY_TRACES, at), at, fields, story, part,
                        extra=extra))


def _rollback(w: _World, service: str, env: str, at: float, trace: str, reason: str, *, story: str = "",
              part: str = "rollback") -> _Event:
    fields = {"service": service, "env": env, "from_version": "", "to_version": "", "reason": reason}
    return w.add(_Event("rollback", w.reporter("rollback"), trace, at, fields, story, part))


def _anomaly(w: _World, service: str, env: str, at: float, trace: str, metric: str, value: str, baseline: str,
             summary: str, *, handle: str = "", story: str = "", part: str = "symptom") -> _Event:
    fields = {"service": service, "env": env, "metric": metric, "value": value, "baseline": baseline,
              "summary": summary}
    return w.add(_Event("anomaly", handle or w.reporter("anomaly"), trace, at, fields, story, part))


def _incident(w: _World, story: Story, day: date, *, env: str = "", service: str = "", hour: float | None = None) -> None:
    """One incident of ``story`` starting on ``day`` (see the module docstring)."""
    rng = w.rng
    service = service or rng.choice(story.services)
    env = env or ("production" if rng.random() < 0.85 else "staging")
    base = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
    t0 = round(base + (hour if hour is not None else rng.choice([rng.uniform(9, 18), rng.uniform(0, 24)])) * HOUR)
    trace = w.trace(_INCIDENT_TRACES, t0)
    if story.remedy == "rollback":
        _deploy(w, service, t0 - rng.uniform(10, 50) * MINUTE, env=env, story=story.key, part="cause-deploy")
    symptom = rng.choice(story.symptom)
    _anomaly(w, service, env, t0, trace, story.metric, story.value, story.baseline, symptom, story=story.key)
    if rng.random() < 0.2:  # a second agent saw it too, in other words
        other = [s for s in story.symptom if s != symptom] or [symptom]
        second = "canary-analyzer" if env != "production" or rng.random() < 0.5 else "capacity-planner"
        _anomaly(w, service, env, t0 + rng.uniform(1, 4) * MINUTE, trace, story.metric, story.value,
                 story.baseline, rng.choice(other), handle=second, story=story.key)
    opened = rng.random() < 0.85
    if opened:
        fields = {"service": service, "severity": rng.choice(["SEV1", "SEV2", "SEV2", "SEV3"]), "title": story.title}
        w.add(_Event("incident_opened", "incident-bot", trace, t0 + rng.uniform(2, 8) * MINUTE, fields, story.key, "opened"))
    cause_at = t0 + rng.uniform(20, 150) * MINUTE
    cause_fields: dict[str, Any] = {"service": service}
    key = rng.choice(["summary", "cause", "summary"])
    cause_fields[key] = rng.choice(story.cause)
    if rng.random() < 0.5:
        cause_fields["confidence"] = rng.choice(["high", "medium"])
    late = rng.uniform(6 * HOUR, 3 * DAY) if rng.random() < 0.35 else None
    w.add(_Event("root_cause", w.reporter("root_cause"), trace, cause_at, cause_fields, story.key, "cause", late))
    fix = rng.choice(story.fix)
    if story.remedy == "rollback":
        fixed_at = t0 + rng.uniform(12, 45) * MINUTE
        _rollback(w, service, env, fixed_at, trace, fix, story=story.key)
        remedy = "rollback"
    elif story.remedy == "config":
        fixed_at = cause_at + rng.uniform(5, 30) * MINUTE
        k, old, new = story.config
        fields = {"service": service, "key": k, "old": old, "new": new, "reason": fix}
        w.add(_Event("config_change", w.reporter("config_change"), trace, fixed_at, fields, story.key, "fix"))
        remedy = "config change"
    else:
        fixed_at = cause_at + rng.uniform(20, 90) * MINUTE
        _deploy(w, service, fixed_at, env=env, trace=trace, summary=fix, story=story.key, part="fix")
        remedy = "hotfix"
    if opened:
        done = fixed_at + rng.uniform(10, 40) * MINUTE
        resolved: dict[str, Any] = {"service": service, "duration_min": round((done - t0) / MINUTE),
                                    "summary": rng.choice(RESOLVED_TEMPLATES).format(remedy=remedy)}
        w.add(_Event("incident_resolved", "incident-bot", trace, done, resolved, story.key, "resolved"))


def _minor_incident(w: _World, day: date, service: str = "") -> None:
    rng = w.rng
    service = service or rng.choice(SERVICES)
    env = "production" if rng.random() < 0.7 else "staging"
    t0 = w.moment(day)
    _deploy(w, service, t0 - rng.uniform(5, 40) * MINUTE, env=env)
    trace = w.trace(_LONE_TRACES, t0)
    metric, value, baseline, wordings = rng.choice(LONE_ANOMALIES)
    _anomaly(w, service, env, t0, trace, metric, value, baseline, rng.choice(wordings), part="minor")
    _rollback(w, service, env, t0 + rng.uniform(8, 30) * MINUTE, trace, rng.choice(ROLLBACK_REASONS), part="minor")


def _lone_rollback(w: _World, day: date, service: str = "", env: str = "", hour: float | None = None) -> None:
    rng = w.rng
    service = service or rng.choice(SERVICES)
    env = env or ("production" if rng.random() < 0.75 else "staging")
    at = w.moment(day) if hour is None else datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() + hour * HOUR
    _deploy(w, service, at - rng.uniform(5, 60) * MINUTE, env=env)
    _rollback(w, service, env, at, w.trace(_LONE_TRACES, at), rng.choice(ROLLBACK_REASONS), part="lone")


def _flaky_tests(w: _World, days: list[date]) -> None:
    rng = w.rng
    for service, test in TESTS:
        n = rng.choice([1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 6])
        when = sorted(w.moment(rng.choice(days), working=0.6) for _ in range(n))
        trace = w.trace(_TEST_TRACES, when[0])
        quarantine = n >= 3 and rng.random() < 0.75
        team = f"team-{service.split('-')[0]}"
        ticket = f"FLK-{rng.randint(100, 999)}"
        for k, at in enumerate(when):
            handle = w.reporter("flaky_test")
            reason = rng.choice(FLAKY_REASONS)
            runs = rng.choice([10, 20, 50])
            failed = rng.randint(1, max(2, runs // 5))
            fields: dict[str, Any] = {"test": test}
            if handle == "test-runner":
                fields |= {"service": service, "runs": runs, "failed": failed, "message": reason}
            elif handle == "flake-hunter":
                fields |= {"flake_rate": f"{failed / runs:.2f}", "summary": f"{reason} ({failed}/{runs} runs)"}
                if rng.random() < 0.5:
                    fields["service"] = service
            else:
                fields |= {"service": service, "pipeline": f"#{rng.randint(40000, 49999)}",
                           "job": f"unit-{rng.randint(1, 8)}", "reason": reason}
            w.add(_Event("flaky_test", handle, trace, at, fields, part="flaky"))
            if quarantine and k == 2:
                q_at = min(at + rng.uniform(1, 24) * HOUR, w.as_of - 10 * MINUTE)
                text = rng.choice(QUARANTINE_REASONS).format(n=3, days=max(1, round((at - when[0]) / DAY)),
                                                              team=team, ticket=ticket)
                fields = {"test": test, "service": service, "reason": text, "ticket": ticket, "owner": team}
                w.add(_Event("test_quarantined", w.reporter("test_quarantined"), trace, q_at, fields, part="quarantine"))
                break


def _config_change(w: _World, day: date) -> None:
    rng = w.rng
    service, key, old, new, why = rng.choice(CONFIG_CHANGES)
    if rng.random() < 0.3:
        old, new, why = new, old, f"reverting: {why} no longer applies"
    at = w.moment(day)
    handle = w.reporter("config_change")
    fields: dict[str, Any] = {"service": service, "key": key, "old": old, "new": new}
    fields["reason" if rng.random() < 0.5 else "summary"] = rng.choice(CONFIG_TEMPLATES).format(
        key=key, old=old, new=new, why=why)
    w.add(_Event("config_change", handle, w.trace((("tnum", 40), ("hex8", 30), ("uuid", 30)), at), at, fields,
                 part="config"))


def simulate(rng: random.Random, *, as_of: float, weeks: int) -> list[_Event]:
    """Every event of ``weeks`` weeks (from the Monday ``weeks`` weeks before ``as_of``'s week) up to
    ``as_of``, in no particular order."""
    today = datetime.fromtimestamp(as_of, tz=UTC).date()
    start = today - timedelta(days=today.weekday() + 7 * weeks)
    w = _World(rng, start, as_of)
    days = w.days()
    weekdays = [d for d in days if d.weekday() < 5]
    for day in days:
        n = rng.randint(4, 8) if day.weekday() < 5 else rng.randint(0, 2)
        for _ in range(n):
            _deploy(w, rng.choices(SERVICES, _DEPLOY_WEIGHTS)[0], w.moment(day))
    stories = list(STORIES)
    rng.shuffle(stories)
    # Today's incident is rolled back, and its service was rolled back for another reason earlier this week.
    today_story = next(s for s in stories if s.remedy == "rollback")
    stories.remove(today_story)
    today_service = rng.choice(today_story.services)
    now_hour = (as_of - datetime(today.year, today.month, today.day, tzinfo=UTC).timestamp()) / HOUR
    _incident(w, today_story, today, env="production", service=today_service, hour=max(0.5, now_hour - 4.5))
    monday = today - timedelta(days=today.weekday())
    _lone_rollback(w, max(monday, today - timedelta(days=2)), service=today_service, env="production")
    # The Friday before today: a production rollback with a story, and a lone one earlier that day.
    friday = today - timedelta(days=(today.weekday() - 4) % 7 or 7)
    friday_story = next(s for s in stories if s.remedy == "rollback")
    stories.remove(friday_story)
    _incident(w, friday_story, friday, env="production", hour=rng.uniform(13, 17))
    _lone_rollback(w, friday, env="production", hour=rng.uniform(9, 11))
    # The other stories: spread over the history, at least a few in the last seven days.
    recent = [d for d in weekdays if (today - d).days < 7 and d != today]
    older = [d for d in days if d < today]
    for n, story in enumerate(stories):
        pool = recent if n < 3 else older
        _incident(w, story, rng.choice(pool))
    for _ in range(8):
        _minor_incident(w, rng.choice(weekdays[:-1]))
    for _ in range(8):
        _lone_rollback(w, rng.choice(weekdays[:-1]))
    for _ in range(25):
        day = rng.choice(days)
        service = rng.choice(SERVICES)
        metric, value, baseline, wordings = rng.choice(LONE_ANOMALIES)
        at = w.moment(day, working=0.6)
        _anomaly(w, service, "production", at, w.trace(_LONE_TRACES, at), metric, value, baseline,
                 rng.choice(wordings), part="lone")
    for _ in range(32):
        _config_change(w, rng.choice(weekdays))
    _flaky_tests(w, days)
    events = [e for e in w.events if e.at <= as_of - MINUTE]
    _versions(rng, events)
    return events


def _versions(rng: random.Random, events: list[_Event]) -> None:
    """Fill in versions in time order: a deploy bumps its service's minor (30%) or patch version; a
    rollback goes from the version running to the one before it."""
    current: dict[str, list[int]] = {}
    running: dict[str, list[str]] = {}
    for e in sorted(events, key=lambda e: e.at):
        service = e.fields.get("service")
        if not isinstance(service, str):
            continue
        v = current.setdefault(service, [rng.randint(1, 6), rng.randint(1, 30), rng.randint(0, 5)])
        history = running.setdefault(service, ["{}.{}.{}".format(*v)])
        if e.event == "deploy":
            if rng.random() < 0.3:
                v[1], v[2] = v[1] + 1, 0
            else:
                v[2] += 1
            version = "{}.{}.{}".format(*v)
            e.fields["version"] = version
            e.fields["summary"] = e.fields["summary"].replace("{version}", version)
            history.append(version)
        elif e.event == "rollback":
            bad, good = history[-1], history[-2] if len(history) > 1 else history[-1]
            e.fields["from_version"], e.fields["to_version"] = bad, good
            history.append(good)


# --- delivery -----------------------------------------------------------------------------------------

_OFFSETS = (timezone(timedelta(hours=2)), timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30)))


def _written_time(rng: random.Random, at: float) -> tuple[Any, float]:
    """(``occurred_at`` as a reporter writes it, the exact seconds it means)."""
    roll = rng.random()
    moment = datetime.fromtimestamp(at, tz=UTC)
    if roll < 0.55:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ"), at
    if roll < 0.70:
        return moment.astimezone(rng.choice(_OFFSETS)).isoformat(), at
    if roll < 0.82:
        return int(at), float(int(at))
    if roll < 0.92:
        return moment.strftime("%Y-%m-%d %H:%M:%S"), at  # no zone: the daemon reads it in its own (UTC)
    exact = at + rng.randint(1, 999) / 1000
    return datetime.fromtimestamp(exact, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"), exact


def _delay(rng: random.Random, event: _Event) -> float:
    if event.late is not None:
        return event.late
    roll = rng.random()
    if roll < 0.80:
        return rng.uniform(1, 90)
    if roll < 0.92:
        return rng.uniform(2, 30) * MINUTE
    if roll < 0.97:
        return rng.uniform(1, 12) * HOUR
    return rng.uniform(1, 3) * DAY


def deliver(rng: random.Random, events: list[_Event], *, as_of: float) -> list[Report]:
    """Reports in the order they reach @memory (by simulated receipt time), with payloads as sent."""
    staged: list[tuple[float, float, int, _Event, Any, float]] = []
    for seq, event in enumerate(sorted(events, key=lambda e: (e.at, e.event, e.handle, e.trace))):
        written, exact = _written_time(rng, event.at)
        received = min(exact + _delay(rng, event), as_of - 1.0)
        staged.append((max(received, exact), exact, seq, event, written, exact))
    staged.sort(key=lambda s: (s[0], s[1], s[2]))
    reports: list[Report] = []
    for index, (received, _, _, event, written, exact) in enumerate(staged):
        payload: dict[str, Any] = {"event": event.event, **event.fields}
        roll = rng.random()
        envelope: str | None = None
        if roll < 0.60:
            payload["trace_id"] = event.trace
        else:
            envelope = event.trace
            if roll > 0.95:
                payload["trace_id"] = event.trace  # both, equal
        payload["occurred_at"] = written
        meta = {"trace_id": event.trace, "occurred_at": iso(exact), "received_at": iso(received)}
        if event.story:
            meta["story"] = event.story
        if event.part:
            meta["part"] = event.part
        meta |= event.extra
        reports.append(Report(index, event.handle, payload, envelope, meta))
    return reports

