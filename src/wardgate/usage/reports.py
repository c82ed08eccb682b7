"""Usage as people read it: totals, by model, by person, key or day, over a bounded period.

Each report is a handful of aggregate queries over `usage_records`, bounded by its period (at most
`MAX_DAYS`) and walking the indexes of migration 0010 (by time, person, key and model); a grouping
returns at most `MAX_GROUPS` rows, the largest first (days: in order).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import BigInteger, ColumnElement, case, cast, func, select
from sqlalchemy.orm import Session, sessionmaker

from wardgate.errors import BadRequestError
from wardgate.storage.models import UsageRecord, User, UserGroup

MAX_DAYS = 400
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
MAX_GROUPS = 1_000
DEFAULT_DAYS = 30
Grouping = Literal["model", "user", "key", "day"]


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Whose usage, of which model, when. None means "any"."""

    since: int
    until: int
    user_id: str | None = None
    api_key_id: str | None = None
    group: str | None = None
    model: str | None = None

    @classmethod
    def of(cls, since: int | None, until: int | None, **filters: str | None) -> UsageQuery:
        """A query over [since, until]: by default the last 30 days; at most `MAX_DAYS` long."""
        end = until if until is not None else int(time.time())
        start = since if since is not None else end - DEFAULT_DAYS * 86400
        if start > end:
            raise BadRequestError("since must not be after until.", code="invalid_period")
        if end - start > MAX_DAYS * 86400:
            raise BadRequestError(f"A usage report covers at most {MAX_DAYS} days.", code="invalid_period")
        return cls(start, end, **filters)

    def conditions(self) -> list[ColumnElement[bool]]:
        found = [UsageRecord.at >= self.since, UsageRecord.at <= self.until]
        if self.user_id is not None:
            found.append(UsageRecord.user_id == self.user_id)
        if self.api_key_id is not None:
            found.append(UsageRecord.api_key_id == self.api_key_id)
        if self.model is not None:
            found.append(UsageRecord.model == self.model)
        if self.group is not None:
            members = select(UserGroup.user_id).where(UserGroup.name == self.group)
            found.append(UsageRecord.user_id.in_(members))
        return found


@dataclass(frozen=True, slots=True)
class Tally:
    """Calls and tokens of one group (or of everything)."""

    key: str | None  # the model, user id, key id or day; None for the totals
    label: str | None  # how people read the key: a person's email, a day's date
    requests: int
    prompt_tokens: int
    completion_tokens: int
    unmetered_requests: int
    incomplete_requests: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


_SUMS = (
    func.count(),
    func.coalesce(func.sum(UsageRecord.prompt_tokens), 0),
    func.coalesce(func.sum(UsageRecord.completion_tokens), 0),
    func.coalesce(func.sum(case((UsageRecord.metered.is_(False), 1), else_=0)), 0),
    func.coalesce(func.sum(case((UsageRecord.complete.is_(False), 1), else_=0)), 0),
)


class UsageReports:
    """Reads usage records."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def totals(self, query: UsageQuery) -> Tally:
        with self._sessions() as db:
            row = db.execute(select(*_SUMS).where(*query.conditions())).one()
        return Tally(None, None, *(int(v) for v in row))

    def grouped(self, query: UsageQuery, by: Grouping) -> list[Tally]:
        """Tallies per model, person (email), key or day (its first second, UTC)."""
        column = _grouping(by)
        statement = select(column, *_SUMS).where(*query.conditions()).group_by(column)
        if by == "day":
            statement = statement.order_by(column)
        else:
            tokens = func.coalesce(func.sum(UsageRecord.prompt_tokens), 0) + func.coalesce(
                func.sum(UsageRecord.completion_tokens), 0
            )
            statement = statement.order_by(tokens.desc(), column)
        with self._sessions() as db:
            rows = db.execute(statement.limit(MAX_GROUPS)).all()
            names = _emails(db, [r[0] for r in rows]) if by == "user" else {}
        return [Tally(*_labelled(by, r[0], names), *(int(v) for v in r[1:])) for r in rows]

    def csv_rows(self, query: UsageQuery) -> Iterator[str]:
        """Per day, person and model, as CSV lines (a header first)."""
        day = _grouping("day")
        statement = (
            select(day, UsageRecord.user_id, UsageRecord.model, *_SUMS)
            .where(*query.conditions())
            .group_by(day, UsageRecord.user_id, UsageRecord.model)
            .order_by(day, UsageRecord.user_id, UsageRecord.model)
            .limit(100_000)
        )
        with self._sessions() as db:
            rows = db.execute(statement).all()
            names = _emails(db, [r[1] for r in rows])
        yield _csv_line(CSV_COLUMNS)
        for at, user_id, model, *sums in rows:
            date = time.strftime("%Y-%m-%d", time.gmtime(int(at)))
            yield _csv_line([date, names.get(user_id, user_id), model, *(int(v) for v in sums)])


CSV_COLUMNS = (
    "date",
    "user",
    "model",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "unmetered_requests",
    "incomplete_requests",
)


def _labelled(by: Grouping, key: object, names: dict[str, str]) -> tuple[str | None, str | None]:
    if key is None:
        return None, None
    if by == "day":
        return str(key), time.strftime("%Y-%m-%d", time.gmtime(int(str(key))))
    return str(key), names.get(str(key), str(key))


def _grouping(by: Grouping) -> ColumnElement[object]:
    if by == "model":
        return UsageRecord.model  # type: ignore[return-value]
    if by == "user":
        return UsageRecord.user_id  # type: ignore[return-value]
    if by == "key":
        return UsageRecord.api_key_id  # type: ignore[return-value]
    return cast(UsageRecord.at - UsageRecord.at % 86400, BigInteger)


def _emails(db: Session, user_ids: Sequence[object]) -> dict[str, str]:
    ids = sorted({str(u) for u in user_ids if u is not None})
    if not ids:
        return {}
    return {
        user_id: email for user_id, email in db.execute(select(User.id, User.email).where(User.id.in_(ids)))
    }


def _csv_line(values: Sequence[object]) -> str:
    """One CSV line; a cell a spreadsheet would run as a formula is quoted as text (OWASP)."""
    out = io.StringIO()
    cells = [f"'{v}" if isinstance(v, str) and v[:1] in _FORMULA else v for v in values]
    csv.writer(out, lineterminator="\n").writerow(cells)
    return out.getvalue()
