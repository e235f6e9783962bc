"""The cursor rule and the outcome of a run, as pure functions over typed records.

Nothing here touches a database or a Dagster run: ``settle`` takes a run's item counts, its held
(failed) items and its completed items, the old cursor and the provider's cursor policy, and
answers the run's status, its cursor, and which items must fail because their checkpoint cannot be
ordered. ``SyncEngine.reconcile`` reads the rows and writes the answer; the property tests
(``tests/test_cursor_properties.py``) exercise the rule with random runs, as singer-sdk tests its
state helpers apart from streaming.

The order of checkpoints (the default reducer, ``reduce_by_max``, and the low-water mark):

- numbers (``int``, finite ``float``) by value; strings by code point, except that ISO-8601
  timestamps with a time zone (``...Z``, ``...+02:00``) compare by the instant they name, so
  ``2024-01-01T00:00:00Z`` sorts before ``2024-01-01T00:00:00.5Z`` (as text it sorts after);
- a number and a string cannot be ordered, and nor can ``NaN``, infinities, booleans, lists or
  dicts: under the default reducer such a checkpoint makes its item fail ("invalid checkpoint")
  instead of making reconcile raise. A failed item whose checkpoint cannot be placed (None,
  unorderable, another kind) holds the cursor where it is.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NamedTuple

from integrations_dagster.errors import IntegrationsError
from integrations_dagster.status import ItemStatus, RunStatus

LOW_WATER, STRICT = "low_water_mark", "strict"
#: Completed checkpoints are handed to a custom reducer in pages of this many (memory stays flat).
PAGE = 5000


class UnorderableCheckpoint(IntegrationsError, TypeError):
    """Checkpoints that the default order cannot compare (a number and a string, a dict, NaN...)."""


class ItemCheckpoint(NamedTuple):
    """One item as the cursor rule sees it (immutable; a tuple, cheap to build per row)."""

    id: int
    status: str
    checkpoint: Any = None
    external_id: str | None = None


@dataclass(frozen=True)
class CursorPolicy:
    """How a provider's checkpoints combine.

    ``reduce`` None means the default maximum (``reduce_by_max``), whose order is known here, so
    unorderable checkpoints are found item by item. A custom reducer is a black box: if it raises,
    the run fails with its message and the cursor stays.
    """

    rule: str = LOW_WATER
    ordered: bool = True
    reduce: Callable[[list[Any]], Any] | None = None


@dataclass(frozen=True)
class Counts:
    pending: int = 0
    processing: int = 0
    success: int = 0
    failed: int = 0
    skipped: int = 0
    superseded: int = 0

    @classmethod
    def of(cls, counts: Mapping[str, int]) -> Counts:
        known = {k: int(counts.get(k, 0) or 0) for k in cls.__dataclass_fields__}
        return cls(**known)

    @property
    def unfinished(self) -> int:
        return self.pending + self.processing

    @property
    def completed(self) -> int:
        return self.success + self.skipped + self.superseded

    @property
    def total(self) -> int:
        return self.unfinished + self.completed + self.failed


@dataclass(frozen=True)
class InvalidItem:
    """A completed item whose checkpoint cannot be ordered: reconcile fails it with ``message``."""

    item_id: int
    external_id: str | None
    message: str


@dataclass(frozen=True)
class Outcome:
    final: bool
    status: str
    counts: Counts
    cursor: Any
    candidate: Any = None
    invalid: tuple[InvalidItem, ...] = ()
    #: A run-level problem (the cursor could not be computed); the run is ``failed``.
    error: str | None = None
    held: bool = field(default=False)
    #: What a later reconcile needs of the completed checkpoints (``kept_checkpoints``), so their
    #: rows may be pruned; None when unknown (a run-level error): then nothing may be pruned.
    kept: list[Any] | None = None


# --- the order -------------------------------------------------------------------------------
_AWARE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?([Zz]|[+-]\d{2}(?::?\d{2})?)",
    re.ASCII,
)


def _instant(s: str) -> tuple[str, str] | None:
    """(UTC ``YYYY-MM-DDTHH:MM:SS``, fraction digits without trailing zeros) of an aware ISO timestamp."""
    if len(s) < 17 or not ("0" <= s[0] <= "9") or s[4] != "-":
        return None
    m = _AWARE.fullmatch(s)
    if m is None:
        return None
    y, mo, d, h, mi, sec, frac, tz = m.groups()
    try:
        if tz in ("Z", "z"):
            offset = timedelta(0)
        else:
            sign = -1 if tz[0] == "-" else 1
            digits = tz[1:].replace(":", "")
            offset = sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(sec or 0), tzinfo=timezone(offset))
        utc = dt.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return utc.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0"), (frac or "").rstrip("0")


def _zform(s: str) -> tuple[str, str] | None:
    """``YYYY-MM-DDTHH:MM:SS[.digits]Z`` (the common UTC spelling), by its separators alone: cheap.

    Its text before the fraction already is the UTC instant, so no parsing is needed; the same
    test, done with ``LIKE`` in SQL, decides when PostgreSQL may order such strings as text.
    """
    n = len(s)
    if n < 20 or s[-1] != "Z" or s[4] != "-" or s[7] != "-" or s[10] != "T" or s[13] != ":" or s[16] != ":":
        return None
    if n == 20:
        return s[:19], ""
    frac = s[20:-1]
    if s[19] != "." or not frac or not (frac.isascii() and frac.isdigit()):
        return None
    return s[:19], frac.rstrip("0")


def checkpoint_kind(value: Any) -> str | None:
    """``"number"``, ``"string"``, or None when the default order cannot place ``value``."""
    t = type(value)
    if t is str:
        return "string"
    if t is int or (t is float and math.isfinite(value)):
        return "number"
    if isinstance(value, int) and not isinstance(value, bool):
        return "number"
    return None


def checkpoint_key(value: Any) -> tuple[Any, ...]:
    """The sort key of a checkpoint under the default order (raises ``UnorderableCheckpoint``)."""
    kind = checkpoint_kind(value)
    if kind == "string":
        inst = _zform(value) or _instant(value)
        if inst is not None:
            return (inst[0], inst[1], value)
        return (value, "", value)
    if kind == "number":
        return (value,)
    raise UnorderableCheckpoint(f"checkpoint {describe(value)} cannot be ordered: {_why(value)}")


def describe(value: Any, limit: int = 120) -> str:
    text = ascii(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    kind = checkpoint_kind(value)
    noun = {"string": "a string", "number": "a number"}.get(kind or "", f"a {type(value).__name__}")
    return f"{text} ({noun})"


def _why(value: Any) -> str:
    if isinstance(value, float):
        return "NaN and infinities have no place in an order"
    if isinstance(value, bool):
        return "booleans are not ordered checkpoints"
    return ("the default reducer (the maximum) orders numbers or strings only; a provider with structured "
            "checkpoints defines reduce_checkpoints")


def reduce_by_max(checkpoints: Iterable[Any]) -> Any:
    """The largest checkpoint under the default order; None for no checkpoints.

    Raises ``UnorderableCheckpoint`` (a ``TypeError``) for values that cannot be ordered together.
    """
    best: Any = None
    best_key: tuple[Any, ...] | None = None
    best_kind: str | None = None
    for value in checkpoints:
        if value is None:
            continue
        key = checkpoint_key(value)
        kind = checkpoint_kind(value)
        if best_kind is not None and kind != best_kind:
            raise UnorderableCheckpoint(
                f"checkpoints {describe(best)} and {describe(value)} cannot be ordered together"
            )
        if best_key is None or key > best_key:
            best, best_key, best_kind = value, key, kind
    return best


def run_status(counts: Counts) -> str:
    if counts.unfinished:
        return RunStatus.PROCESSING.value
    if counts.failed == 0:
        return RunStatus.SUCCESS.value
    return RunStatus.PARTIAL.value if counts.completed else RunStatus.FAILED.value


# --- what a later reconcile needs ---------------------------------------------------------------
class _Gaps:
    """Completed checkpoints folded per gap between the run's held checkpoints.

    A later reconcile of the run (after its held items are skipped or retried) asks only for the
    completed checkpoints strictly below the smallest checkpoint still held, and every such limit is
    one of today's held checkpoints: so the maximum (or the provider's reduction) of each gap
    between consecutive held checkpoints is all it needs, however many rows are pruned. Gaps are
    per kind of checkpoint (numbers and strings have separate orders); checkpoints the default order
    cannot place (a structured cursor's dicts) share one gap.
    """

    def __init__(self, held: Iterable[ItemCheckpoint], reduce: Callable[[list[Any]], Any] | None) -> None:
        bounds: dict[str, set[tuple[Any, ...]]] = {}
        for it in held:
            kind = checkpoint_kind(it.checkpoint) if it.checkpoint is not None else None
            if kind is not None:
                bounds.setdefault(kind, set()).add(checkpoint_key(it.checkpoint))
        self._bounds = {k: sorted(v) for k, v in bounds.items()}
        self._reduce = reduce
        self._best: dict[tuple[str, int], tuple[tuple[Any, ...], Any]] = {}
        self._pages: dict[tuple[str, int], list[Any]] = {}
        self._reduced: dict[tuple[str, int], Any] = {}
        self.broken = False

    def add(self, cp: Any) -> None:
        kind = checkpoint_kind(cp)
        key = checkpoint_key(cp) if kind is not None else None
        gap = (kind or "", bisect_right(self._bounds.get(kind or "", ()), key) if key is not None else 0)
        if self._reduce is None:
            best = self._best.get(gap)
            if key is not None and (best is None or key > best[0]):
                self._best[gap] = (key, cp)
            return
        page = self._pages.setdefault(gap, [])
        page.append(cp)
        if len(page) >= PAGE:
            self._fold(gap)

    def _fold(self, gap: tuple[str, int]) -> None:
        page = self._pages.pop(gap, None)
        if page and self._reduce is not None and not self.broken:
            try:
                part = self._reduce(page)
                prev = self._reduced.get(gap)
                self._reduced[gap] = part if prev is None else self._reduce([prev, part])
            except Exception:  # the reducer refused a gap's data: nothing is kept (so nothing pruned)
                self.broken = True

    def result(self) -> list[Any] | None:
        if self._reduce is None:
            return [self._best[g][1] for g in sorted(self._best)]
        for gap in list(self._pages):
            self._fold(gap)
        if self.broken:
            return None
        return [self._reduced[g] for g in sorted(self._reduced) if self._reduced[g] is not None]


# --- the rule ----------------------------------------------------------------------------------
def settle(
    counts: Mapping[str, int] | Counts,
    held: Iterable[ItemCheckpoint],
    completed: Iterable[ItemCheckpoint],
    *,
    old_cursor: Any,
    policy: CursorPolicy,
) -> Outcome:
    """The outcome of a run from its items.

    ``held``: the run's failed items (read whole: they are few); ``completed``: its completed items,
    in id order, read once (a generator is fine). While any item is unfinished nothing is decided.
    Never raises on data: checkpoints that cannot be reduced become ``invalid`` items (default
    order) or a run-level ``error`` (custom reducer).
    """
    c = counts if isinstance(counts, Counts) else Counts.of(counts)
    if c.unfinished:
        return Outcome(final=False, status=RunStatus.PROCESSING.value, counts=c, cursor=old_cursor)
    if policy.reduce is None:
        return _settle_default(c, list(held), completed, old_cursor, policy)
    return _settle_custom(c, list(held), completed, old_cursor, policy)


def _settle_default(
    c: Counts, held: list[ItemCheckpoint], completed: Iterable[ItemCheckpoint], old: Any, policy: CursorPolicy
) -> Outcome:
    old_kind = checkpoint_kind(old) if old is not None else None
    if old is not None and old_kind is None:
        return _failed_run(c, old, f"the integration's cursor {describe(old)} cannot be ordered ({_why(old)}); "
                                   "set a new one with `integrations advance-cursor ID --set-cursor JSON`")
    # The reference kind: the cursor's; without a cursor, the kind of the run's first orderable item.
    below: dict[str, tuple[Any, ...]] = {}  # per kind, the smallest held checkpoint
    held_first: tuple[int, str] | None = None
    unknown = False  # a held item whose checkpoint cannot be placed at all
    for it in held:
        kind = checkpoint_kind(it.checkpoint) if it.checkpoint is not None else None
        if kind is None:
            unknown = True
            continue
        key = checkpoint_key(it.checkpoint)
        if kind not in below or key < below[kind]:
            below[kind] = key
        if held_first is None or it.id < held_first[0]:
            held_first = (it.id, kind)
    ref = old_kind
    best_key: tuple[Any, ...] | None = None
    best: Any = None
    example: Any = old if old_kind else None
    invalid: list[InvalidItem] = []
    gaps = _Gaps(held, None) if held else None  # without held items, ``best`` is all a later run needs
    for it in completed:
        cp = it.checkpoint
        if cp is None:
            continue
        kind = checkpoint_kind(cp)
        if ref is None and kind is not None:
            ref = held_first[1] if held_first is not None and held_first[0] < it.id else kind
        if kind is None or kind != ref:
            if it.status == ItemStatus.SUCCESS:  # skipped and superseded items do not count: leave them be
                invalid.append(InvalidItem(it.id, it.external_id, _invalid_message(
                    cp, example, old if old_kind else None)))
            continue
        if example is None:
            example = cp
        if gaps is not None:
            gaps.add(cp)
        key = checkpoint_key(cp)
        limit = below.get(kind)
        if limit is not None and not key < limit:
            continue
        if best_key is None or key > best_key:
            best_key, best = key, cp
    if ref is None and held_first is not None:
        ref = held_first[1]
    n_bad = len(invalid)
    counts = c
    if n_bad:
        counts = Counts(success=c.success - n_bad, failed=c.failed + n_bad, skipped=c.skipped,
                        superseded=c.superseded)
    hold = False
    if counts.failed:
        if policy.rule == STRICT or not policy.ordered:
            hold = True
        elif unknown or n_bad or any(k != ref for k in below):
            hold = True  # a failure whose place in the order is unknown: nothing may pass it
    candidate = None if hold else best
    cursor = _monotonic_default(old, candidate)
    kept = gaps.result() if gaps is not None else ([] if best is None else [best])
    return Outcome(final=True, status=run_status(counts), counts=counts, cursor=cursor, candidate=candidate,
                   invalid=tuple(invalid), held=hold, kept=kept)


def _invalid_message(value: Any, example: Any, cursor: Any) -> str:
    if checkpoint_kind(value) is None:
        why = _why(value)
    elif cursor is not None:
        why = f"it cannot be ordered with the integration's cursor {describe(cursor)}"
    elif example is not None:
        why = f"it cannot be ordered with the other checkpoints of this run, e.g. {describe(example)}"
    else:
        why = "it cannot be ordered with the other checkpoints of this run"
    return (f"invalid checkpoint: {describe(value)}: {why}. The item holds the cursor; skip it "
            "(`integrations skip-sync-item ID`) once the provider is fixed, or set the cursor "
            "(`integrations advance-cursor INTEGRATION --set-cursor JSON`)")[:4000]


def _monotonic_default(old: Any, candidate: Any) -> Any:
    if candidate is None:
        return old
    if old is None:
        return candidate
    return candidate if checkpoint_key(candidate) > checkpoint_key(old) else old


def _failed_run(c: Counts, old: Any, error: str) -> Outcome:
    return Outcome(final=True, status=RunStatus.FAILED.value, counts=c, cursor=old, error=error[:4000], held=True)


def _settle_custom(
    c: Counts, held: list[ItemCheckpoint], completed: Iterable[ItemCheckpoint], old: Any, policy: CursorPolicy
) -> Outcome:
    reduce = policy.reduce
    assert reduce is not None
    status = run_status(c)
    limit: tuple[Any, ...] | None = None
    hold = False
    if c.failed:
        if policy.rule == STRICT or not policy.ordered:
            hold = True
        else:
            try:
                keys = [checkpoint_key(it.checkpoint) for it in held]
            except UnorderableCheckpoint:
                keys = []
            if not keys or any(it.checkpoint is None for it in held):
                hold = True
            else:
                limit = min(keys)
    # With held items every completed checkpoint is read anyway, for what a later reconcile needs
    # (``_Gaps``); without, the reduction of all of them is that.
    gaps = _Gaps(held, reduce) if c.failed else None
    reduced: Any = None
    page: list[Any] = []
    try:
        for it in completed:
            cp = it.checkpoint
            if cp is None:
                continue
            if gaps is not None:
                gaps.add(cp)
            if hold:
                continue
            if limit is not None:
                try:
                    if not checkpoint_key(cp) < limit:
                        continue
                except UnorderableCheckpoint:
                    continue  # cannot be placed below the failure: it stays behind it
            page.append(cp)
            if len(page) >= PAGE:
                part = reduce(page)
                reduced = part if reduced is None else reduce([reduced, part])
                page = []
        if page:
            part = reduce(page)
            reduced = part if reduced is None else reduce([reduced, part])
        kept = gaps.result() if gaps is not None else ([] if reduced is None else [reduced])
        if hold:
            return Outcome(final=True, status=status, counts=c, cursor=old, held=True, kept=kept)
        cursor = reduced if old is None else (old if reduced is None else reduce([old, reduced]))
    except Exception as exc:  # the provider's reducer refused the data: the run fails, the cursor stays
        return _failed_run(c, old, f"the cursor cannot be computed: reduce_checkpoints raised "
                                   f"{type(exc).__name__}: {exc}; the cursor is unchanged. Fix the provider's "
                                   "reducer, then run `integrations advance-cursor ID`")
    return Outcome(final=True, status=status, counts=c, cursor=cursor, candidate=reduced, kept=kept)
