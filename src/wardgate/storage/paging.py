"""Paging that costs the same on the first page and the thousandth: keyset cursors and capped counts.

A list is ordered by a time column and the primary key (ties broken by the key), and the next page
starts after the last row shown, so the database walks an index from there instead of counting past
every earlier row (`OFFSET`). The cursor that names that row is opaque to clients: base64url of
`[time, key]`, refused with a 400 when it is anything else. It grants nothing: a cursor only
positions a query its holder may run anyway.

Totals are counted up to `COUNT_CAP` rows: an exact count of a million matching audit events is a
scan of a million index entries on every page view, and nobody reads past "more than 10,000".
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import ColumnElement, Select, func, literal, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from wardgate.errors import BadRequestError

COUNT_CAP = 10_000  # totals past this are reported as "at least"
MAX_OFFSET = 10_000  # deepest row a numbered page may start at; past it, follow the cursor
INVALID_CURSOR = "Invalid cursor: pass back the next_cursor of the previous page unchanged."
_MAX_CURSOR = 200  # characters
_LAST_TIME = 2**53
_KEY = re.compile(r"[0-9A-Za-z-]{1,64}")  # a UUID or a number: nothing a database could choke on
_DIGITS = re.compile(r"[0-9]{1,19}")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Cursor:
    """The last row of a page: its time column and primary key."""

    at: int
    key: str

    def encode(self) -> str:
        raw = json.dumps([self.at, self.key], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Parse a cursor a client sent back; BadRequestError when it is not one."""
        try:
            if len(text) > _MAX_CURSOR:
                raise ValueError(text)
            at, key = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        except (ValueError, TypeError, binascii.Error):
            raise BadRequestError(INVALID_CURSOR, code="invalid_cursor") from None
        if type(at) is not int or not 0 <= at < _LAST_TIME or type(key) is not str or not _KEY.fullmatch(key):
            raise BadRequestError(INVALID_CURSOR, code="invalid_cursor")
        return cls(at, str(key))


@dataclass(frozen=True, slots=True)
class Order:
    """How a list is ordered: by `at`, ties by `key`, newest first unless `ascending`."""

    at: InstrumentedAttribute[int]
    key: InstrumentedAttribute[str] | InstrumentedAttribute[int]
    ascending: bool = False

    def after(self, cursor: Cursor) -> ColumnElement[bool]:
        """Rows that come after `cursor` in this order: one row-value comparison, which both
        databases answer with a range of the (at, key) index (an OR of two ranges, PostgreSQL
        would answer by filtering every row before the cursor)."""
        key: object = int(cursor.key) if self._int_key else cursor.key
        here, there = tuple_(self.at, self.key), tuple_(literal(cursor.at), literal(key))
        return here > there if self.ascending else here < there

    def apply(self, query: Select[tuple[object]]) -> Select[tuple[object]]:
        if self.ascending:
            return query.order_by(self.at.asc(), self.key.asc())
        return query.order_by(self.at.desc(), self.key.desc())

    def cursor_of(self, at: int, key: str | int) -> Cursor:
        return Cursor(at, str(key))

    @property
    def _int_key(self) -> bool:
        return self.key.type.python_type is int


def parse_cursor(cursor: str | None, order: Order) -> Cursor | None:
    """The decoded cursor (None for the first page); a numeric key must be a number."""
    if cursor is None:
        return None
    parsed = Cursor.decode(cursor)
    if order.key.type.python_type is int and not (_DIGITS.fullmatch(parsed.key) and int(parsed.key) < 2**63):
        raise BadRequestError(INVALID_CURSOR, code="invalid_cursor")
    return parsed


def check_offset(offset: int) -> None:
    """Numbered pages stop at `MAX_OFFSET` rows: deeper, each page would count past every row before."""
    if offset > MAX_OFFSET:
        raise BadRequestError(
            f"Pages start at most {MAX_OFFSET} rows in: follow next_cursor to go further.",
            code="page_too_deep",
        )


def capped_count(db: Session, conditions: list[ColumnElement[bool]], table: type[object]) -> int:
    """How many rows of `table` match, counted up to `COUNT_CAP + 1` (more: "at least COUNT_CAP")."""
    inner = select(1).select_from(table).where(*conditions).limit(COUNT_CAP + 1).subquery()
    return int(db.scalar(select(func.count()).select_from(inner)) or 0)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """Rows of one page, how many match in all (up to `COUNT_CAP`), and where the next page starts."""

    rows: list[T]
    total: int
    next_cursor: str | None

    @property
    def total_exact(self) -> bool:
        return self.total <= COUNT_CAP


def fetch_page(
    db: Session,
    model: type[T],
    conditions: list[ColumnElement[bool]],
    order: Order,
    *,
    cursor: str | None = None,
    offset: int = 0,
    limit: int,
    count: bool = True,
) -> Page[T]:
    """One page of `model` rows matching `conditions`, in `order`: after `cursor` when given (keyset),
    else from `offset` (bounded by `MAX_OFFSET`). Reads one row more than it shows, to know whether
    there is a next page."""
    after = parse_cursor(cursor, order)
    query = select(model).where(*conditions)
    if after is not None:
        query = query.where(order.after(after))
    else:
        check_offset(offset)
        query = query.offset(offset)
    rows: list[T] = list(db.scalars(order.apply(query).limit(limit + 1)))  # type: ignore[arg-type]
    following = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        following = order.cursor_of(getattr(last, order.at.key), getattr(last, order.key.key)).encode()
    total = capped_count(db, conditions, model) if count else len(rows)
    return Page(rows, total, following)
