"""Tracking-store URIs: the default store, resolution, SQLite paths, redaction and a fast reachability check.

The one home of URI handling for the tracking layer and the apps. Imports no MLflow (and no lightning),
so the command line can use it before anything heavy is loaded.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from lightning_wd.core.messages import one_line

__all__ = [
    "DEFAULT_EXPERIMENT",
    "DEFAULT_TRACKING_URI",
    "TrackingUnavailable",
    "absolute_sqlite_uri",
    "check_tracking_uri",
    "redact",
    "resolve_tracking_uri",
    "sqlite_path",
    "uri_scheme",
]

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_EXPERIMENT = "lightning_wd"



class TrackingUnavailable(RuntimeError):
    """The MLflow tracking store cannot be used (server unreachable, unsupported URI)."""


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The tracking URI to use: ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else the SQLite default.

    Example:
        >>> resolve_tracking_uri("http://127.0.0.1:5000")
        'http://127.0.0.1:5000'
    """
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def uri_scheme(uri: str) -> str:
    return urllib.parse.urlsplit(uri).scheme.split("+")[0].lower()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working directory unless absolute)."""
    if uri_scheme(uri) != "sqlite":
        return None
    path = uri.split(":///", 1)[1] if ":///" in uri else ""
    path = path.split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def absolute_sqlite_uri(uri: str) -> str:
    """``uri`` with a relative SQLite path made absolute (against the working directory, now).

    MLflow caches one store per URI string, so a relative ``sqlite:///`` URI would keep pointing at the
    folder where it was first used.

    Example:
        >>> absolute_sqlite_uri("http://host:5000")
        'http://host:5000'
        >>> absolute_sqlite_uri("sqlite:///mlruns/mlflow.db") == "sqlite:///" + str(Path.cwd() / "mlruns/mlflow.db")
        True
    """
    path = sqlite_path(uri)
    if path is None or path.is_absolute():
        return uri
    query = uri.split("?", 1)[1] if "?" in uri else ""
    return f"{uri.split(':///', 1)[0]}:///{Path.cwd() / path}" + (f"?{query}" if query else "")


def redact(uri: str) -> str:
    """``uri`` without a password (``http://user:***@host``)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, with a one-line message, if MLflow cannot use the tracking store ``uri``.

    For ``http(s)://`` URIs this makes a single ``GET <uri>/health`` with a short timeout (MLflow's own
    client would retry for minutes). ``file:`` stores are refused, as MLflow >= 3.13 refuses them
    (unless ``MLFLOW_ALLOW_FILE_STORE=true``). Database URIs are not checked here.

    Args:
        uri: a tracking URI.
        timeout: seconds to wait for the server.

    Raises:
        TrackingUnavailable: the server does not answer, answers with a server error, or the store is a
            plain directory.

    Example:
        >>> check_tracking_uri("sqlite:///mlruns/mlflow.db")  # nothing to check for a database
        >>> check_tracking_uri("http://127.0.0.1:9/", timeout=1)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        lightning_wd.tracking.uris.TrackingUnavailable: MLflow tracking server http://127.0.0.1:9 is unreachable
    """
    scheme = uri_scheme(uri)
    if scheme in ("http", "https"):
        base = uri.rstrip("/")
        parts = urllib.parse.urlsplit(base)
        netloc = parts.hostname or ""
        if ":" in netloc:  # IPv6 literal
            netloc = f"[{netloc}]"
        if parts.port is not None:
            netloc += f":{parts.port}"
        health = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path + "/health", "", ""))
        shown = redact(base)
        hint = "start it (mlflow server ...) or point --tracking-uri / MLFLOW_TRACKING_URI elsewhere"
        try:
            with urllib.request.urlopen(health, timeout=timeout) as response:  # noqa: S310 (http(s) only)
                response.read(64)
        except urllib.error.HTTPError as error:
            if error.code >= 500:
                raise TrackingUnavailable(
                    f"MLflow tracking server {shown} answered HTTP {error.code} ({one_line(error.reason)}); "
                    f"{hint}"
                ) from None
            # 401/403/404...: something answers; the MLflow client reports auth or path problems itself
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            raise TrackingUnavailable(
                f"MLflow tracking server {shown} is unreachable ({one_line(reason)}); {hint}"
            ) from None
        return
    if scheme == "file" or (scheme == "" and not uri.startswith("databricks")):
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("1", "true"):
            return
        raise TrackingUnavailable(
            f"tracking URI {uri!r} is a plain-directory store, which MLflow >= 3.13 refuses; "
            f"use a database such as {DEFAULT_TRACKING_URI}"
        )
