"""Credentials out of URLs, in a URL or in free text: what GapBridge stores, logs or returns passes through here.

Exception texts carry URLs (``requests``: "Invalid URL 'https://user:pw@host/...'"; ``urllib3``:
"Max retries exceeded with url: /api?access_token=..."), and so may a tool's own error body.
``redact_urls`` removes the userinfo (``user:password@``) of every URL and masks the value of
query parameters whose names say they are credentials. It is idempotent and leaves text
without such URLs unchanged.

This module may import the standard library only.
"""

from __future__ import annotations

import re
import traceback

MASK = "***"

# "//" then userinfo up to the last "@" of the authority (urlsplit's reading: a password may hold "@").
# Catches scheme://, protocol-relative //, and requests' "http//user:pw@host" typo alike.
_USERINFO = re.compile(r"//[^/\s?#'\"<>\\]*@")
# Parameter names that are credentials: token, secret, password, api key, signature, alone or as the
# last word of a longer name (access_token, client_secret, x-amz-security-token, X-Amz-Signature).
# Only the obvious ones: masking an ordinary parameter would make error texts and links useless.
# The value runs to the next separator; punctuation ending a sentence ("...?token=abc: HTTP 503") stays.
_SECRET_PARAM = re.compile(
    r"(?<![\w.-])((?:[\w.-]*[_.-])?(?:token|secret|password|passwd|pwd|api[_-]?key|apikey|signature|sig)=)"
    r"[^&#;\s'\"<>]+?(?=[:.,)]*(?:[&#;\s'\"<>]|$))",
    re.IGNORECASE,
)

# what every name _SECRET_PARAM matches contains: a cheap test first, as most URLs (a ticket's link, stored for every
# incident a sync fetches) have parameters but none of these, and _SECRET_PARAM tries a match at every character
_SECRET_WORDS = ("token", "secret", "passw", "pwd", "key", "sig")


def redact_urls(text: str) -> str:
    """``text`` (a URL, or text with URLs in it) with URL userinfo removed and credential parameters masked."""
    if "@" in text:
        text = _USERINFO.sub("//", text)
    if "=" in text and _may_name_secret(text):
        text = _SECRET_PARAM.sub(rf"\g<1>{MASK}", text)
    return text


def _may_name_secret(text: str) -> bool:
    folded = text.casefold()  # as IGNORECASE folds: the long s and the Kelvin sign too
    return any(word in folded for word in _SECRET_WORDS)


def has_userinfo(url: str) -> bool:
    """Whether a URL carries a user name or password (``user@``, ``user:pw@``, ``:pw@``) before its host."""
    return bool(_USERINFO.search(url))


def redacted_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` (its causes included) as text fit for a log line."""
    return redact_urls("".join(traceback.format_exception(exc)).rstrip())
