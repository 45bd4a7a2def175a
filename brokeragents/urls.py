"""Redis URLs as they may be shown: with every credential masked."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"
# Query arguments redis-py passes to the connection as they are; these carry secrets.
_SECRET_QUERY_ARGS = frozenset({"password", "pass", "passwd", "secret", "token", "auth"})


def redact_url(url: str) -> str:
    """``url`` with its password (in the user info or the query string) replaced by ``***``.

    The user name, host, port, database and other arguments stay, so the output still tells
    which server and which ACL user are meant. Anything unparsable is masked whole.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            user_info, _, host = netloc.rpartition("@")
            user, has_password, _password = user_info.partition(":")
            netloc = f"{user}:{MASK}@{host}" if has_password else netloc  # no colon: a user name only
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(name, MASK if name.lower() in _SECRET_QUERY_ARGS else value) for name, value in pairs],
                safe="*/",
            )
        redacted = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
        if not netloc and url.startswith(f"{parts.scheme}://"):
            redacted = redacted.replace(":", "://", 1)  # unix:///path keeps its empty authority
        return redacted
    except ValueError:
        return MASK


def url_secrets(url: str) -> list[str]:
    """The credentials in ``url`` (its password, secret query arguments), to scrub from texts."""
    try:
        parts = urlsplit(url)
        found = [parts.password, unquote(parts.password)] if parts.password else []
        found += [value for name, value in parse_qsl(parts.query) if name.lower() in _SECRET_QUERY_ARGS and value]
    except ValueError:
        return []
    return [secret for secret in found if secret]


def scrub(text: str, url: str) -> str:
    """``text`` (an error message, say) with ``url`` redacted and its credentials masked elsewhere."""
    if not url:
        return text
    secrets = url_secrets(url)
    pieces = []
    for piece in text.split(url):
        for secret in secrets:
            piece = piece.replace(secret, MASK).replace(quote(secret, safe=""), MASK)
        pieces.append(piece)
    return redact_url(url).join(pieces)


__all__ = ("MASK", "redact_url", "scrub", "url_secrets")
