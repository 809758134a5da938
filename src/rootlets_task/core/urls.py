"""URLs: telling a URL from a local path, and a URL without its secrets for logs and records."""

import re
from urllib.parse import urlsplit

SCHEMES = ("http", "https", "file")  # what the package downloads from
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SECRETS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/?#\s'\"]*@)?(?P<rest>[^?#\s'\"]*)"
                      r"(?P<query>[?#][^\s'\"]*)?")


def scheme(source: str) -> str | None:
    """The scheme of ``scheme://...`` in lower case (``htps`` too: a misspelt URL is not a path), else None."""
    found = _SCHEME.match(source)
    return found[1].lower() if found else None


def redact(url: str) -> str:
    """``url`` without what may be a secret: user info, query and fragment (``?<redacted>`` marks a removed one).

    ``https://user:token@host/a/b.zip?X-Amz-Signature=...`` -> ``https://host/a/b.zip?<redacted>``. Works on URLs
    that do not parse (no host, an unclosed IPv6 bracket, a port above 65535) and on any scheme; local paths are
    returned unchanged.
    """
    if scheme(url) is None:
        return url
    return scrub(url)


def scrub(text: str) -> str:
    """``text`` (an error message, say) with the user info and query of every URL in it removed."""
    return _SECRETS.sub(lambda m: m["scheme"] + m["rest"] + ("?<redacted>" if m["query"] else ""), text)


def is_url(source: str) -> bool:
    return scheme(source) in SCHEMES


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be fetched (unknown scheme, no host, a bad IPv6 address or port), or None."""
    found = scheme(url)
    if found is None:
        return None
    if found not in SCHEMES:
        return f"unknown URL scheme {found!r}; use {', '.join(SCHEMES)} (or a local path)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (parsing the port is the check)
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if found != "file" and not parts.hostname:
        return "no host in the URL"
    return None
