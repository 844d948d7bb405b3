"""Credentials never leave the process: the one place that hides passwords in URIs, text and mappings.

* :func:`redact`: one URI, ``scheme://user:pw@host`` -> ``scheme://user:***@host`` (and password-like query
  parameters, ``?password=...``, ``?token=...``).
* :func:`redact_text`: every such URI inside free text (a config dump, an error message, a tag), and the
  values of password-like keys (``password: x``, ``"api_key": "x"``, ``token=x``).
* :func:`redact_value`: a nested mapping/list: password-like keys get ``***``, strings go through
  :func:`redact_text`.
* :func:`split_credentials`: a tracking URI without its user and password, and the two apart, so MLflow
  (which prints and stores the URI it is given) only ever sees the clean one.
* :func:`private_file`: make a file the project wrote readable by its owner only (``0o600``).

Imports nothing heavy (no MLflow, no lightning).
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

__all__ = ["MASK", "is_secret_key", "private_file", "redact", "redact_text", "redact_value", "split_credentials"]

MASK = "***"
#: key names (lower case, ``-`` as ``_``) whose values are secrets: these words anywhere in the key, or
#: a key that is or ends with ``token`` (not ``max_tokens``)
_SECRET_WORDS = ("password", "passwd", "secret", "api_key", "apikey", "access_key", "credential", "private_key")
_URI_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*):(?P<pw>[^\s@/'\"]+)@")
_KEY_VALUE = re.compile(
    r"""(?P<key>["']?(?P<name>[A-Za-z_][\w.\-]*)["']?)(?P<sep>[ \t]*[:=][ \t]*)"""
    r"""(?P<value>"[^"\n]*"|'[^'\n]*'|[^\s"',}\]]+)"""
)


def is_secret_key(name: str) -> bool:
    """Whether a key (``password``, ``db_password``, ``api-key``, ``auth_token``) names a secret.

    Example:
        >>> [is_secret_key(k) for k in ("password", "AUTH_TOKEN", "api-key", "max_tokens", "lr")]
        [True, True, True, False, False]
    """
    key = str(name).lower().replace("-", "_").rsplit(".", 1)[-1]
    return any(word in key for word in _SECRET_WORDS) or key == "token" or key.endswith("_token")


def redact(uri: str) -> str:
    """``uri`` without a password: ``http://user:***@host``; password-like query values as ``***``.

    Example:
        >>> redact("postgresql+psycopg2://bob:s3cret@db:5432/optuna")
        'postgresql+psycopg2://bob:***@db:5432/optuna'
        >>> redact("https://host/api?token=abc&x=1")
        'https://host/api?token=***&x=1'
        >>> redact("sqlite:///mlruns/mlflow.db")
        'sqlite:///mlruns/mlflow.db'
    """
    if not isinstance(uri, str):
        return uri
    try:
        parts = urllib.parse.urlsplit(uri)
        password = parts.password
    except ValueError:  # not a parsable URL (a bad port, ...): fall back to the text rules
        return redact_text(uri)
    netloc, query = parts.netloc, parts.query
    if password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:{MASK}@{host}"
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if any(is_secret_key(k) for k, _ in pairs):
            query = "&".join(f"{k}={MASK if is_secret_key(k) else v}" for k, v in pairs)
    if (netloc, query) == (parts.netloc, parts.query):
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def redact_text(text: str) -> str:
    """``text`` with the password of every URI in it and the value of every password-like key masked.

    Example:
        >>> redact_text("tracking_uri: http://alice:pw1@host:5000\\npassword: 'x y'\\nlr: 0.1")
        "tracking_uri: http://alice:***@host:5000\\npassword: '***'\\nlr: 0.1"
        >>> redact_text('{"api_key": "k-123", "steps": 3}')
        '{"api_key": "***", "steps": 3}'
    """
    if not isinstance(text, str) or not text:
        return text
    text = _URI_USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", text)

    def _value(match: re.Match) -> str:
        value = match.group("value")
        if not is_secret_key(match.group("name")) or value.strip("\"'") == MASK:
            return match.group(0)
        # quoted even where the value was not: a bare *** would be a YAML alias
        masked = f"{value[0]}{MASK}{value[0]}" if value[0] in "\"'" else f"'{MASK}'"
        return f"{match.group('key')}{match.group('sep')}{masked}"

    return _KEY_VALUE.sub(_value, text)


def redact_value(value: Any) -> Any:
    """A copy of a nested mapping/list/str with secrets masked (keys by name, strings by :func:`redact_text`).

    Example:
        >>> redact_value({"storage": "postgresql://u:pw@h/db", "db": {"password": "pw"}, "n": 3})
        {'storage': 'postgresql://u:***@h/db', 'db': {'password': '***'}, 'n': 3}
    """
    if isinstance(value, Mapping):
        return {k: (MASK if is_secret_key(k) and value[k] not in (None, "") else redact_value(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    if isinstance(value, str):
        return redact_text(value)
    return value


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """``(uri without user:password, user, password)`` of an ``http(s)://`` URI; other URIs unchanged.

    Example:
        >>> split_credentials("http://alice:s3cret@127.0.0.1:5000/")
        ('http://127.0.0.1:5000/', 'alice', 's3cret')
        >>> split_credentials("sqlite:///mlruns/mlflow.db")
        ('sqlite:///mlruns/mlflow.db', None, None)
    """
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme.lower() not in ("http", "https") or "@" not in parts.netloc:
        return uri, None, None
    host = parts.netloc.rpartition("@")[2]
    user = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), user, password


def private_file(path: str | os.PathLike) -> None:
    """Make a file readable and writable by its owner only (``0o600``); nothing if it is missing.

    Example:
        >>> import tempfile, stat
        >>> with tempfile.NamedTemporaryFile() as f:
        ...     private_file(f.name); oct(stat.S_IMODE(os.stat(f.name).st_mode))
        '0o600'
    """
    try:
        os.chmod(path, 0o600)
    except FileNotFoundError:
        pass
