"""What a search query says about time: a period it asks about ("in March", "summer 2023", "last week",
"2024-05-03") and whether it wants the newest or the oldest of several answers ("now", "originally").

Only the query's words are read; no model is called. Months and days are UTC. A month without a year
("in March") means that month of any year; relative periods ("last week", "3 months ago") are measured
from `now`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MONTHS = {
    name: number
    for number, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        start=1,
    )
    for name in names
}
SEASONS = {
    "spring": (3, 4, 5),
    "summer": (6, 7, 8),
    "autumn": (9, 10, 11),
    "fall": (9, 10, 11),
    "winter": (12, 1, 2),
}
# Words after which a month or season name is a time, not a verb ("may", "march") or a fall.
_TIME_PREPOSITIONS = frozenset(
    [
        "in",
        "on",
        "during",
        "of",
        "since",
        "until",
        "till",
        "from",
        "around",
        "about",
        "early",
        "mid",
        "late",
        "last",
        "this",
        "next",
        "by",
        "before",
        "after",
        "through",
    ]
)
_NEWEST = re.compile(
    r"\b(now|currently|current|these days|nowadays|at the moment|at present|latest|most recent|most recently|"
    r"anymore|any more|still|lately|recently)\b"
)
_OLDEST = re.compile(
    r"\b(originally|original|initially|at first|first|used to|before|previously|previous|formerly|earlier)\b"
)
_TOKEN = re.compile(r"[A-Za-z]+|\d+(?:st|nd|rd|th)?|-")
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_RELATIVE = re.compile(r"\b(\d+|a|one|two|three|four|five|six|ten|twelve)\s+(day|week|month|year)s?\s+ago\b")
_WORD_NUMBERS = {
    "a": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "ten": 10,
    "twelve": 12,
}
_UNIT_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}


@dataclass(frozen=True, slots=True)
class TimeHint:
    """A period a query asks about and its preference among answers of different ages.

    `start`/`end` bound the period ([start, end), either may be None); `months` restricts it to months of
    the year (1-12, empty: any); `recency` is +1 (newest preferred), -1 (oldest preferred) or 0.
    """

    start: datetime | None = None
    end: datetime | None = None
    months: frozenset[int] = frozenset()
    recency: int = 0

    @property
    def has_period(self) -> bool:
        return self.start is not None or self.end is not None or bool(self.months)

    def contains(self, epoch: float) -> bool:
        """Whether a time (epoch seconds) lies in the period."""
        if self.start is not None and epoch < self.start.timestamp():
            return False
        if self.end is not None and epoch >= self.end.timestamp():
            return False
        return not self.months or datetime.fromtimestamp(epoch, UTC).month in self.months


def _month_start(year: int, month: int) -> datetime:
    return datetime(year + (month - 1) // 12, (month - 1) % 12 + 1, 1, tzinfo=UTC)


def _is_year(token: str) -> bool:
    return token.isdigit() and len(token) == 4 and 1900 <= int(token) <= 2200


def _day(token: str) -> int | None:
    digits = token.rstrip("stndrh")
    if digits.isdigit() and 1 <= int(digits) <= 31 and len(digits) <= 2:
        return int(digits)
    return None


def _calendar(tokens: list[str], raw: list[str]) -> TimeHint | None:
    """A month (with an optional day and year), a season (with an optional year), or a bare year."""
    for i, token in enumerate(tokens):
        before = tokens[i - 1] if i else ""
        after = tokens[i + 1] if i + 1 < len(tokens) else ""
        after2 = tokens[i + 2] if i + 2 < len(tokens) else ""
        if token in MONTHS:
            # "may"/"march"/"mar"... are months only where a date is plausible.
            capitalised = raw[i][:1].isupper() and i > 0
            dated = _is_year(after) or _day(after) is not None or _day(before) is not None
            if not (capitalised or dated or before in _TIME_PREPOSITIONS) or (
                len(token) == 3 and not capitalised
            ):
                continue
            month = MONTHS[token]
            year = (
                int(after) if _is_year(after) else int(after2) if _day(after) and _is_year(after2) else None
            )
            if year is None:
                return TimeHint(months=frozenset({month}))
            day = _day(after) or _day(before)
            if day is not None:
                try:
                    start = datetime(year, month, day, tzinfo=UTC)
                except ValueError:
                    start = None
                if start is not None:
                    return TimeHint(start - timedelta(days=1), start + timedelta(days=2))
            return TimeHint(_month_start(year, month), _month_start(year, month + 1))
        if token in SEASONS and (before in _TIME_PREPOSITIONS or before == "the" or _is_year(after)):
            in_the = before == "the" and i >= 2 and tokens[i - 2] in ("in", "during", "by", "since")
            if token == "fall" and not (
                in_the or before in ("this", "last", "next", "in") or _is_year(after)
            ):
                continue
            months = SEASONS[token]
            if _is_year(after):
                year = int(after)
                first = year - 1 if months[0] == 12 else year
                return TimeHint(_month_start(first, months[0]), _month_start(first, months[0] + 3))
            return TimeHint(months=frozenset(months))
    for i, token in enumerate(tokens):
        if _is_year(token) and (i == 0 or tokens[i - 1] in _TIME_PREPOSITIONS):
            year = int(token)
            return TimeHint(datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC))
    return None


def _relative(text: str, now: datetime) -> TimeHint | None:
    """Periods counted back from `now`: yesterday, last week/month/year, this week/month/year, N units ago."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if re.search(r"\byesterday\b", text):
        return TimeHint(today - timedelta(days=1), today)
    week = today - timedelta(days=today.weekday())
    month = today.replace(day=1)
    if re.search(r"\blast week\b", text):
        return TimeHint(week - timedelta(days=7), week)
    if re.search(r"\bthis week\b", text):
        return TimeHint(week, None)
    if re.search(r"\blast month\b", text):
        return TimeHint(_month_start(month.year, month.month - 1), month)
    if re.search(r"\bthis month\b", text):
        return TimeHint(month, None)
    if re.search(r"\blast year\b", text):
        return TimeHint(datetime(now.year - 1, 1, 1, tzinfo=UTC), datetime(now.year, 1, 1, tzinfo=UTC))
    if re.search(r"\bthis year\b", text):
        return TimeHint(datetime(now.year, 1, 1, tzinfo=UTC), None)
    ago = _RELATIVE.search(text)
    if ago is not None:
        count = int(ago.group(1)) if ago.group(1).isdigit() else _WORD_NUMBERS[ago.group(1)]
        days = _UNIT_DAYS[ago.group(2)]
        middle = now - timedelta(days=count * days)
        # Half a unit either side (at least a day): "3 weeks ago" is roughly, not exactly, 21 days.
        slack = timedelta(days=max(1.0, days / 2))
        return TimeHint(middle - slack, middle + slack)
    return None


def time_hint(query: str, now: datetime) -> TimeHint:
    """The period `query` asks about and which answers it prefers; an empty hint when it says nothing of time."""
    lowered = query.lower()
    iso = _ISO_DATE.search(query)
    hint: TimeHint | None = None
    if iso is not None:
        try:
            day = datetime(int(iso.group(1)), int(iso.group(2)), int(iso.group(3)), tzinfo=UTC)
            hint = TimeHint(day - timedelta(days=1), day + timedelta(days=2))
        except ValueError:
            hint = None
    if hint is None:
        raw = _TOKEN.findall(query)
        hint = _calendar([token.lower() for token in raw], raw) or _relative(lowered, now)
    recency = 1 if _NEWEST.search(lowered) else -1 if _OLDEST.search(lowered) else 0
    if hint is None:
        return TimeHint(recency=recency)
    return TimeHint(hint.start, hint.end, hint.months, recency)
