"""Credentials in URLs are never written out. A recipe may hold a server as `http://user:password@host/v1` or
with `?api_key=...`; every place that writes or prints configuration or an error (manifests, the export's
recipe.yaml and card, error messages, row error texts, eval-judge's metrics) passes it through `redact_url`
(a string) or `redact` (a nested dict/list), which put `***` in place of the password, of a userinfo that is a
single token, and of the values of query parameters that name a secret. Text without credentials comes back
unchanged, so recorded configs (and the identities hashed from them) stay what they were.

`find_credentials` is the check that nothing was missed: the card and report refuse text it finds anything in.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://netloc: the netloc runs to the first character a URL's authority cannot hold unencoded (and the quotes
# and brackets a URL is written between in YAML, JSON or a repr).
_AUTHORITY = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<netloc>[^/?#\s\"'`<>(){}\\]*)")
# A query parameter whose name says it is a secret: key, api_key, apikey, token, access_token, client_secret,
# password, sig, x-amz-signature... (any name ending in key, token, secret, password or signature).
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;](?:[A-Za-z0-9_.-]*[_.-])?(?:key|apikey|token|secret|password|passwd|pwd|signature|sig|auth)=)"
    r"(?P<value>[^&#\s\"'`<>]+)", re.IGNORECASE)


def _userinfo(match: re.Match) -> str:
    """The authority with its password (or single-token userinfo) masked; the last `@` ends the userinfo."""
    netloc = match["netloc"]
    if "@" not in netloc:
        return match.group()
    userinfo, host = netloc.rsplit("@", 1)
    user, colon, _ = userinfo.partition(":")
    masked = f"{user}:{MASK}" if colon else MASK
    return f"{match['scheme']}{masked}@{host}"


def redact_url(text: str) -> str:
    """`text` with the credentials of every URL in it masked (`http://user:***@host`, `?api_key=***`)."""
    if "://" not in text and "=" not in text:
        return text
    text = _AUTHORITY.sub(_userinfo, text)
    return _SECRET_PARAM.sub(lambda m: m["name"] + MASK, text)


def redact(tree):
    """A copy of a JSON-like tree (dicts, lists, tuples, strings) with `redact_url` applied to every string."""
    if isinstance(tree, str):
        return redact_url(tree)
    if isinstance(tree, dict):
        return {key: redact(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(redact(value) for value in tree)
    return tree


def find_credentials(text: str) -> str | None:
    """The first URL credential left in `text` (its kind, for a message that does not repeat it), or None."""
    for match in _AUTHORITY.finditer(text):
        netloc = match["netloc"]
        if "@" in netloc:
            userinfo = netloc.rsplit("@", 1)[0]
            if userinfo.partition(":")[2 if ":" in userinfo else 0] != MASK:
                return f"a password in the URL {match['scheme']}…@{netloc.rsplit('@', 1)[1]}"
    for match in _SECRET_PARAM.finditer(text):
        if match["value"] != MASK:
            return f"a secret query parameter {match['name'][1:-1]!r}"
    return None
