"""URLs: telling a URL from a local path, and a URL without its secrets for logs and records."""

from urllib.parse import urlparse, urlunparse


def redact(url: str) -> str:
    """``url`` without what may be a secret: user info, query and fragment (``?<redacted>`` marks a removed query).

    ``https://user:token@host/a/b.zip?X-Amz-Signature=...`` -> ``https://host/a/b.zip?<redacted>``; local paths are
    returned unchanged.
    """
    parsed = urlparse(url)
    if parsed.scheme.lower() not in ("http", "https", "file", "ftp"):
        return url
    host = parsed.hostname or ""
    if parsed.port:
        host += f":{parsed.port}"
    return urlunparse((parsed.scheme, host, parsed.path, "", "", "")) + ("?<redacted>" if parsed.query else "")


def is_url(source: str) -> bool:
    return urlparse(source).scheme.lower() in ("http", "https", "file")
