"""Credentials written inside URLs never reach output: one helper for messages, records and tags.

:func:`redact` masks, anywhere in a text, the user info of URLs
(``https://user:password@host`` -> ``https://***@host``) and the values of
query parameters that carry secrets: tokens, keys, passwords, AWS SigV4
(``X-Amz-Signature``, ``X-Amz-Credential``, ``X-Amz-Security-Token``...),
Google (``X-Goog-*``) and Azure SAS (``sig``, ``se``, ``sp``, ``sv``...)
signed query strings. :func:`public_url` keeps only scheme, host and path
(what run records store).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s'\"<>?#]*)@")
_SECRET_NAMES = (
    r"x-amz-[a-z0-9-]+|x-goog-[a-z0-9-]+|sig|signature|se|sp|sv|sr|st|spr|srt|ss|skoid|sktid|skt|ske|sks|skv|"
    r"[a-z0-9_.-]*(?:token|secret|passw(?:or)?d|pwd|api[_-]?key|apikey|credential|auth)[a-z0-9_.-]*|"
    r"key|access[_-]?key(?:[_-]?id)?|code|session|jwt"
)
# a value runs to the next separator; punctuation ending a sentence (": ", ", ") stays outside it
_QUERY_SECRET = re.compile(
    rf"(?P<lead>[?&;])(?P<name>{_SECRET_NAMES})=(?P<value>[^&\s'\"#;<>]*[^&\s'\"#;<>:,.)\]])?", re.IGNORECASE
)


def redact(text: object) -> str:
    """``text`` with the credentials inside any URL (user info, secret query values) masked."""
    out = str(text)
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", out)
    return _QUERY_SECRET.sub(lambda m: f"{m['lead']}{m['name']}={MASK}", out)


def public_url(url: str) -> str:
    """A URL without user info, query or fragment (where tokens hide); a path is returned as is."""
    if "://" not in url:
        return redact(url)
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:  # a malformed port or host: mask rather than fail
        return redact(url.split("?", 1)[0])
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
