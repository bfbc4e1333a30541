#!/usr/bin/env python3
"""Independent reference for driftless's recurrence engine, used by tests/tests/recurrence.rs.

Expands canonical `calendar_event` records with python-dateutil (rrulestr, rruleset) and the
standard library's zoneinfo, and prints the occurrences that overlap each case's window. It shares
no code with the Rust engine; only the documented semantics (docs/record-model.md, "Recurrence"):

- DTSTART is always an instance (RFC 5545), also when the rule would not produce it.
- An occurrence is listed when it overlaps [from, to); one without duration when from <= start < to.
- Floating and all-day values are read in the case's `tz`.
- A wall time in a DST gap takes the offset before the gap and an ambiguous one its first
  occurrence (zoneinfo's fold=0, which is what RFC 5545 prescribes).
- Timed durations are exact (end instant minus start instant); all-day durations are whole days.
- Overrides are keyed by the original start (UTC basic form, or the basic date for all-day);
  `cancelled` removes the instance, `start`/`end` move it, other fields change it.

stdin:  {"cases": [{"name", "event", "from", "to", "tz"}]}
stdout: {"<name>": [{"start", "end", "original_start", "all_day", "title", "status"}, ...]}
Timed values are RFC 3339 in the case's zone (`Z` when the offset is zero); all-day values are
dates. Each list is sorted by start instant, then original start.
"""

import json
import re
import sys
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from dateutil.rrule import rruleset, rrulestr

TIME_RE = re.compile(
    r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(Z|[+-]\d{2}:\d{2})?(?:\[([A-Za-z0-9_/+-]+)\])?$"
)
PAD = timedelta(days=2)


def offset_text(delta):
    minutes = int(delta.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def parse(value):
    """An event time string as ("date", date), ("floating", naive) or ("aware", datetime)."""
    if len(value) == 10:
        return "date", date.fromisoformat(value)
    m = TIME_RE.match(value)
    if not m:
        raise ValueError(f"not an event time: {value}")
    day, clock, offset, zone = m.groups()
    naive = datetime.fromisoformat(f"{day}T{clock}")
    if zone:
        tz = ZoneInfo(zone)
        chosen = naive.replace(tzinfo=tz, fold=0)
        if offset:
            for fold in (0, 1):
                candidate = naive.replace(tzinfo=tz, fold=fold)
                if offset_text(candidate.utcoffset()) == offset:
                    chosen = candidate
                    break
        return "aware", chosen
    if offset == "Z":
        return "aware", naive.replace(tzinfo=timezone.utc)
    if offset:
        raise ValueError(f"offset without a zone: {value}")
    return "floating", naive


class Frame:
    """Where the series' wall times live: an all-day, floating or zoned (incl. UTC) series."""

    def __init__(self, start, view):
        self.kind, self.dtstart_value = parse(start)
        self.view = view
        if self.kind == "date":
            self.dtstart = datetime.combine(self.dtstart_value, time())
        else:
            self.dtstart = self.dtstart_value
        self.tz = self.dtstart.tzinfo if self.kind == "aware" else None

    def to_frame(self, value):
        """A start/rdate/exdate/override-key value as a datetime comparable to the series'."""
        kind, v = parse(value) if isinstance(value, str) else value
        if self.kind == "date":
            if kind != "date":
                raise ValueError(f"timed value {value} in an all-day series")
            return datetime.combine(v, time())
        if kind == "date":
            raise ValueError(f"date {value} in a timed series")
        if self.kind == "floating":
            return v if kind == "floating" else v.astimezone(self.view).replace(tzinfo=None)
        if kind == "floating":
            return v.replace(tzinfo=self.tz)
        return v.astimezone(self.tz)

    def instant(self, dt):
        """A frame datetime (or a date) as an instant in UTC."""
        if isinstance(dt, date) and not isinstance(dt, datetime):
            dt = datetime.combine(dt, time())
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=self.view)
        return utc(dt)

    def key(self, dt):
        if self.kind == "date":
            return dt.strftime("%Y%m%d")
        if self.kind == "floating":
            return dt.strftime("%Y%m%dT%H%M%S")
        return dt.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")

    def key_to_frame(self, key):
        if self.kind == "date":
            return datetime.strptime(key, "%Y%m%d")
        if self.kind == "floating":
            return datetime.strptime(key, "%Y%m%dT%H%M%S")
        utc = datetime.strptime(key, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        return utc.astimezone(self.tz)

    def window_bound(self, instant):
        if self.kind == "aware":
            return instant.astimezone(self.tz)
        return instant.astimezone(self.view).replace(tzinfo=None)


def utc(value):
    """Aware datetimes in UTC, so arithmetic and comparisons are exact (Python compares and adds
    datetimes that share a tzinfo by wall time); dates unchanged."""
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc)
    return value


def fmt(value, view):
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()
    text = value.astimezone(view).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def resolve(value, view):
    """An override's start/end as a date or an instant in UTC."""
    kind, v = parse(value)
    if kind == "floating":
        return utc(v.replace(tzinfo=view))
    return utc(v)


def expand(event, window_from, window_to, view):
    frame = Frame(event["start"], view)
    all_day = frame.kind == "date"
    if all_day:
        end_day = parse(event["end"])[1] if event.get("end") else frame.dtstart_value + timedelta(days=1)
        duration = end_day - frame.dtstart_value
    else:
        start_instant = frame.instant(frame.dtstart)
        duration = (
            resolve(event["end"], view) - start_instant if event.get("end") else timedelta(0)
        )

    recurrence = event.get("recurrence") or {}
    rset = rruleset()
    for _, line in sorted((recurrence.get("rules") or {}).items()):
        body = line[len("RRULE:"):] if line.upper().startswith("RRULE:") else line
        rset.rrule(rrulestr(body, dtstart=frame.dtstart))
    rset.rdate(frame.dtstart)
    for value in (recurrence.get("rdates") or {}).values():
        rset.rdate(frame.to_frame(value))
    for value in (recurrence.get("exdates") or {}).values():
        rset.exdate(frame.to_frame(value))

    overrides = event.get("overrides") or {}
    lo = frame.window_bound(window_from) - duration - PAD
    hi = frame.window_bound(window_to) + PAD
    for key, ov in overrides.items():
        if "start" in ov or "end" in ov:
            k = frame.key_to_frame(key)
            lo, hi = min(lo, k - PAD), max(hi, k + PAD)

    out = []
    for original in rset.between(lo, hi, inc=True):
        key = frame.key(original)
        ov = overrides.get(key, {})
        if ov.get("cancelled"):
            continue
        original_value = original.date() if all_day else frame.instant(original)
        if "start" in ov:
            start = resolve(ov["start"], view)
        else:
            start = original_value
        start_is_date = isinstance(start, date) and not isinstance(start, datetime)
        if "end" in ov:
            end = resolve(ov["end"], view)
        elif start_is_date == all_day:
            end = start + duration
        else:
            end = start + (timedelta(days=1) if start_is_date else timedelta(0))
        start_i, end_i = frame.instant(start), frame.instant(end)
        overlaps = start_i < window_to and (
            end_i > window_from or (end_i <= start_i and start_i >= window_from)
        )
        if not overlaps:
            continue
        out.append(
            (
                start_i,
                frame.instant(original_value),
                {
                    "start": fmt(start, view),
                    "end": fmt(end, view),
                    "original_start": fmt(original_value, view),
                    "all_day": start_is_date,
                    "title": ov.get("title", event.get("title")),
                    "status": ov.get("status", event.get("status") or "confirmed"),
                },
            )
        )
    out.sort(key=lambda t: (t[0], t[1]))
    return [o for _, _, o in out]


def main():
    cases = json.load(sys.stdin)["cases"]
    result = {}
    for case in cases:
        view = ZoneInfo(case.get("tz") or "UTC")
        window_from = datetime.fromisoformat(case["from"].replace("Z", "+00:00"))
        window_to = datetime.fromisoformat(case["to"].replace("Z", "+00:00"))
        result[case["name"]] = expand(case["event"], window_from, window_to, view)
    json.dump(result, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
