"""Paginators: one shape for every way a tool pages its answers (after the Meltano Singer SDK's).

A paginator holds the value the next request asks with (``current_value``: a key, a token,
an offset, a page number, a URL). After each answer the connector calls ``advance`` with the
page's records, its parsed body and the response; the paginator decides whether more follow
(``finished``) and what to ask next. A value that does not move (the same token or URL again,
a key that goes back) means the tool ignored the paging: that is an ``InvalidResponseError``
naming the value, never an endless loop.

The loop a connector writes is always the same::

    paginator = CursorTokenPaginator(...)
    while not paginator.finished:
        body, response = self.http.json("GET", path, params={..., "token": paginator.current_value})
        records = body["issues"]
        yield Page(records, ...)
        paginator.advance(records, body, response)
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

import requests

from .errors import InvalidResponseError

T = TypeVar("T")
Records = Sequence[Mapping[str, Any]]


class Paginator(abc.ABC, Generic[T]):
    """The value the next request asks with, how it advances, when paging is finished."""

    #: names the scheme in error messages
    kind = "paging"

    def __init__(self, start_value: T | None = None, *, max_pages: int | None = None) -> None:
        self._value = start_value
        self._finished = False
        self.pages = 0  # answers seen so far
        self.max_pages = max_pages

    @property
    def current_value(self) -> T | None:
        return self._value

    @property
    def finished(self) -> bool:
        return self._finished

    def advance(self, records: Records, body: Any = None, response: requests.Response | None = None) -> None:
        """Take in one answer: finish, or move to the value the next request asks with."""
        if self._finished:
            raise RuntimeError("advance() after the paginator finished")
        self.pages += 1
        if not self.has_more(records, body, response) or (self.max_pages is not None and self.pages >= self.max_pages):
            self._finished = True
            return
        new = self.next_value(records, body, response)
        if new is None:
            self._finished = True
            return
        self.check_progress(self._value, new)
        self._value = new

    def has_more(self, records: Records, body: Any, response: requests.Response | None) -> bool:
        """Whether another page follows this one; by default, until a page comes back empty.

        Not "until a page is short": a tool that filters after it limits (ServiceNow's ACLs) can
        answer a short page, or an empty one, while more records follow.
        """
        return bool(records)

    @abc.abstractmethod
    def next_value(self, records: Records, body: Any, response: requests.Response | None) -> T | None:
        """What the next request asks with; None: nothing follows."""

    def check_progress(self, old: T | None, new: T) -> None:
        if new == old:
            raise InvalidResponseError(f"{self.kind}: the tool answered the same position again ({_short(new)}): "
                                       "it ignored the paging parameters; stopped instead of reading the same page forever")


class KeysetPaginator(Paginator[tuple[Any, ...]]):
    """After the key of the last record, in key order: stable while records change (ServiceNow's sys_updated_on, sys_id).

    ``key(record)`` is a tuple of comparables. A page whose last key is not past the one asked
    for means the tool ignored the ordering or the filter.
    """

    kind = "keyset paging"

    def __init__(self, key: Callable[[Mapping[str, Any]], tuple[Any, ...]], start_value: tuple[Any, ...] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(start_value, **kwargs)
        self.key = key

    def next_value(self, records: Records, body: Any, response: requests.Response | None) -> tuple[Any, ...] | None:
        return self.key(records[-1]) if records else None

    def check_progress(self, old: tuple[Any, ...] | None, new: tuple[Any, ...]) -> None:
        if old is not None and not new > old:
            raise InvalidResponseError(f"{self.kind}: did not advance past {_short(old)} (last record {_short(new)}): "
                                       "the tool ignored the ordering or the filter")


class CursorTokenPaginator(Paginator[str]):
    """An opaque token from the body names the next page (Jira Cloud's ``nextPageToken``, Zendesk's ``after_cursor``).

    ``token(body)`` returns it, or None on the last page. A token seen before is a loop.
    """

    kind = "cursor paging"

    def __init__(self, token: Callable[[Any], str | None], start_value: str | None = None, **kwargs: Any) -> None:
        super().__init__(start_value, **kwargs)
        self.token = token
        self._seen: set[str] = set()

    def has_more(self, records: Records, body: Any, response: requests.Response | None) -> bool:
        return True  # the token decides: an empty page may still carry one

    def next_value(self, records: Records, body: Any, response: requests.Response | None) -> str | None:
        value = self.token(body)
        return str(value) if value not in (None, "") else None

    def check_progress(self, old: str | None, new: str) -> None:
        if new == old or new in self._seen:
            raise InvalidResponseError(f"{self.kind}: the tool gave a page token it gave before ({_short(new)}): stopped instead of looping")
        if old is not None:
            self._seen.add(old)


class OffsetPaginator(Paginator[int]):
    """By record offset (Jira Data Center's ``startAt``, ServiceNow's ``sysparm_offset``).

    Finished on an empty page, or when the offset reaches the total the tool states
    (``total(body, response)``, None when it does not say). Offsets shift if records enter the
    set while it is read; use it over a set sorted by a key that only grows, with an overlap.
    """

    kind = "offset paging"

    def __init__(self, start_value: int = 0, *, total: Callable[[Any, requests.Response | None], int | None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(start_value, **kwargs)
        self.total = total

    def has_more(self, records: Records, body: Any, response: requests.Response | None) -> bool:
        if not records:
            return False
        known = self.total(body, response) if self.total else None
        return known is None or (self._value or 0) + len(records) < known

    def next_value(self, records: Records, body: Any, response: requests.Response | None) -> int | None:
        return (self._value or 0) + len(records)


class PageNumberPaginator(Paginator[int]):
    """By page number (Request Tracker's ``page``): ``more(body, response)`` says whether a next page exists.

    RT answers ``pages`` and ``total`` as null for accounts without the right to see counts, but
    always says ``next_page`` when one follows; without ``more``, paging ends on an empty page.
    """

    kind = "page-number paging"

    def __init__(self, start_value: int = 1, *, more: Callable[[Any, requests.Response | None], bool] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(start_value, **kwargs)
        self.more = more

    def has_more(self, records: Records, body: Any, response: requests.Response | None) -> bool:
        return self.more(body, response) if self.more else bool(records)

    def next_value(self, records: Records, body: Any, response: requests.Response | None) -> int | None:
        return (self._value or 1) + 1


class LinkHeaderPaginator(Paginator[str]):
    """The ``Link: <...>; rel="next"`` header names the next page's URL (RFC 8288; ServiceNow, GitHub)."""

    kind = "Link-header paging"

    def __init__(self, start_value: str | None = None, **kwargs: Any) -> None:
        super().__init__(start_value, **kwargs)
        self._seen: set[str] = set()

    def has_more(self, records: Records, body: Any, response: requests.Response | None) -> bool:
        return True  # the header decides

    def next_value(self, records: Records, body: Any, response: requests.Response | None) -> str | None:
        if response is None:
            return None
        return next_link(response)

    def check_progress(self, old: str | None, new: str) -> None:
        if new == old or new in self._seen:
            raise InvalidResponseError(f"{self.kind}: the next link points to a page already read ({_short(new)}): stopped instead of looping")
        if old is not None:
            self._seen.add(old)


def next_link(response: requests.Response) -> str | None:
    """The URL of ``rel="next"`` in a response's Link header, if any."""
    link = response.links.get("next") if response.headers.get("Link") else None
    url = link.get("url") if link else None
    return str(url) if url else None


def offset_pages(fetch: Callable[[int, int], tuple[list[dict[str, Any]], int | None]], page_size: int,
                 max_records: int = 100_000) -> Iterator[dict[str, Any]]:
    """The records of a set that does not change while we read it (journals, lookups), by offset.

    ``fetch(offset, limit)`` returns a page and the total when the tool says it.
    """
    paginator = OffsetPaginator(0, total=lambda body, _response: body)
    while not paginator.finished and (paginator.current_value or 0) < max_records:
        records, total = fetch(paginator.current_value or 0, page_size)
        yield from records[: max_records - (paginator.current_value or 0)]
        if len(records) < page_size:
            return  # a lookup set has no ACL filter after the limit: short is the end
        paginator.advance(records, total)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
