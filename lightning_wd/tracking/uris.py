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
from lightning_wd.tracking.redaction import MASK, redact, split_credentials

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
#: schemes MLflow itself opens as tracking stores (besides plugins'); ``file`` is refused separately
_STORE_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc",
                  "file")
_PROBE = "/api/2.0/mlflow/experiments/search"



class TrackingUnavailable(RuntimeError):
    """The MLflow tracking store cannot be used (server unreachable, unsupported URI)."""


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The tracking URI to use: ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else the SQLite default.

    A server URI with credentials (``http://user:pw@host``) comes back without them: they move to
    ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, which MLflow's client sends on every request
    (and this process's rank and worker processes inherit), so the URI that MLflow prints ("View run ...
    at: ...") and that runs, tags and configs store never holds the password.

    Example:
        >>> resolve_tracking_uri("http://127.0.0.1:5000")
        'http://127.0.0.1:5000'
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    clean, user, password = split_credentials(uri)
    if user is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = user
    if password is not None and password != MASK:  # a masked copy (best.yaml): the password stays in the env
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    return clean


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


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, with a one-line message, if MLflow cannot use the tracking store ``uri``.

    For ``http(s)://`` URIs this makes a ``GET /health`` with a short timeout (MLflow's own client would
    retry for minutes), then one ``GET`` of MLflow's REST API (``experiments/search``) with the credentials of
    the URI or of
    ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``: an endpoint that is not MLflow (HTTP 404, not JSON) and
    refused credentials fail here. ``file:`` stores are refused, as MLflow >= 3.13 refuses them (unless
    ``MLFLOW_ALLOW_FILE_STORE=true``), and so are schemes MLflow has no store for (``bogus://x``). Database
    URIs are not opened here.

    Args:
        uri: a tracking URI.
        timeout: seconds to wait for the server.

    Raises:
        TrackingUnavailable: the server does not answer, answers with a server error, refuses the
            credentials or is not MLflow; the store is a plain directory; the scheme is unknown.

    Example:
        >>> check_tracking_uri("sqlite:///mlruns/mlflow.db")  # nothing to check for a database
        >>> check_tracking_uri("http://127.0.0.1:9/", timeout=1)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        lightning_wd.tracking.uris.TrackingUnavailable: MLflow tracking server http://127.0.0.1:9 is unreachable
    """
    scheme = uri_scheme(uri)
    if scheme in ("http", "https"):
        _check_server(uri, timeout)
        return
    if scheme == "file" or (scheme == "" and not uri.startswith("databricks")):
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("1", "true"):
            return
        raise TrackingUnavailable(
            f"tracking URI {uri!r} is a plain-directory store, which MLflow >= 3.13 refuses; "
            f"use a database such as {DEFAULT_TRACKING_URI}"
        )
    if scheme and scheme not in _STORE_SCHEMES and scheme not in _plugin_schemes():
        raise TrackingUnavailable(
            f"tracking URI {redact(uri)!r}: unsupported scheme {scheme!r}; use sqlite:///PATH, "
            "postgresql://USER@HOST/DB, mysql://..., or an MLflow server http(s)://HOST:PORT"
        )


def _plugin_schemes() -> set[str]:
    """Schemes of tracking stores that installed plugins register (entry points, without importing MLflow)."""
    from importlib.metadata import entry_points

    try:
        return {ep.name for ep in entry_points(group="mlflow.tracking_store")}
    except Exception:  # a broken distribution's metadata: no plugins
        return set()


def _check_server(uri: str, timeout: float) -> None:
    """``GET /health`` (reachable within ``timeout``), then one GET of MLflow's REST API
    (``experiments/search``): unreachable, a server error, credentials refused, or an endpoint that is not
    MLflow each fail here in one line."""
    import base64
    import json

    base = uri.rstrip("/")
    parts = urllib.parse.urlsplit(base)
    netloc = parts.hostname or ""
    if ":" in netloc:  # IPv6 literal
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    probe = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path + _PROBE, "max_results=1", ""))
    request = urllib.request.Request(probe, headers={"Accept": "application/json"})
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if parts.username:
        user, password = urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
    if user:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    elif os.environ.get("MLFLOW_TRACKING_TOKEN"):
        request.add_header("Authorization", f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}")
    shown = redact(base)
    hint = "start it (mlflow server ...) or point --tracking-uri / MLFLOW_TRACKING_URI elsewhere"
    health = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path + "/health", "", ""))
    try:  # reachable at all (quick: MLflow answers /health without touching its store)
        with urllib.request.urlopen(health, timeout=timeout) as response:  # noqa: S310 (http(s) only)
            response.read(64)
    except urllib.error.HTTPError:
        pass  # something answers: the API request below says what
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise TrackingUnavailable(f"MLflow tracking server {shown} is unreachable ({one_line(reason)}); {hint}") \
            from None
    try:  # the API reads the store, which a busy server takes longer for
        with urllib.request.urlopen(request, timeout=max(timeout, 60.0)) as response:  # noqa: S310
            body = response.read(1 << 16)
    except urllib.error.HTTPError as error:
        if error.code >= 500:
            raise TrackingUnavailable(
                f"MLflow tracking server {shown} answered HTTP {error.code} ({one_line(error.reason)}); {hint}"
            ) from None
        if error.code in (401, 403):
            raise TrackingUnavailable(
                f"MLflow tracking server {shown} refused the credentials (HTTP {error.code}); give them in the "
                "URI (http://USER:PASSWORD@HOST) or in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
            ) from None
        raise TrackingUnavailable(
            f"{shown} is not an MLflow tracking server: GET {parts.path}{_PROBE} answered HTTP {error.code}; "
            "check the host, port and path of --tracking-uri"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise TrackingUnavailable(f"MLflow tracking server {shown} is unreachable ({one_line(reason)}); {hint}") \
            from None
    try:
        answer = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        answer = None
    if not isinstance(answer, dict):
        raise TrackingUnavailable(
            f"{shown} is not an MLflow tracking server: GET {parts.path}{_PROBE} did not answer with MLflow's "
            "JSON; check the host, port and path of --tracking-uri"
        )
