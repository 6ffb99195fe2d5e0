"""
The C{--broker} value, parsed and checked without importing any client
library, so that C{echoplus check} and the config machinery can validate it
on a machine without the C{redis} extra.

Accepted::

    memory
    redis://[[user]:password@]host[:port][/db]
    rediss://[[user]:password@]host[:port][/db][?ca=/path/ca.pem]   (TLS)
    unix:///path/redis.sock[?db=N&password=SECRET]
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

import attrs

__all__ = ["BrokerURL", "parse_broker_url"]

DEFAULT_REDIS_PORT = 6379


@attrs.frozen
class BrokerURL:
    """
    A parsed C{--broker} value.

    @ivar scheme: C{memory}, C{redis}, C{rediss} or C{unix}.
    @ivar host: the Redis host (C{redis}, C{rediss}).
    @ivar port: the Redis port (C{redis}, C{rediss}).
    @ivar path: the UNIX socket path (C{unix}).
    @ivar db: the Redis database number.
    @ivar username: the ACL user name, if any.
    @ivar password: the password, if any.
    @ivar ca: a CA certificate file to verify a C{rediss} server with,
        instead of the system's trust store.
    """

    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""
    db: int = 0
    username: str | None = attrs.field(default=None, repr=False)
    password: str | None = attrs.field(default=None, repr=False)
    ca: str | None = None

    @property
    def is_memory(self) -> bool:
        """
        Whether this is the in-process engine.
        """
        return self.scheme == "memory"

    def display(self) -> str:
        """
        The URL without credentials, for logs, metrics and C{/healthz}.
        """
        if self.is_memory:
            return "memory"
        if self.scheme == "unix":
            return f"unix://{self.path}" + (f"?db={self.db}" if self.db else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/{self.db}"


def parse_broker_url(text: str) -> BrokerURL:
    """
    Parse a C{--broker} value.

    @raise ValueError: it is not one of the accepted forms; the message says
        which form was expected.
    """
    text = text.strip()
    if text == "memory":
        return BrokerURL("memory")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    query = parse_qs(parts.query)
    if scheme == "unix":
        if parts.netloc and "@" not in parts.netloc:
            raise ValueError(
                f"broker {text!r}: a UNIX socket URL is unix:///absolute/path"
            )
        if not parts.path.startswith("/") or parts.path == "/":
            raise ValueError(f"broker {text!r}: unix:// needs an absolute socket path")
        return BrokerURL(
            "unix",
            path=unquote(parts.path),
            db=_db(text, _one(query, "db", "0")),
            password=_one(query, "password", None),
        )
    if scheme not in ("redis", "rediss"):
        raise ValueError(
            f"broker {text!r}: use memory, redis://host[:port][/db], "
            "rediss://... or unix:///path"
        )
    if not parts.hostname:
        raise ValueError(f"broker {text!r}: no host")
    try:
        port = parts.port if parts.port is not None else DEFAULT_REDIS_PORT
    except ValueError:
        raise ValueError(f"broker {text!r}: the port is not a number from 1 to 65535")
    if not 0 < port < 65536:
        raise ValueError(f"broker {text!r}: the port is not a number from 1 to 65535")
    ca = _one(query, "ca", None)
    if ca is not None and scheme != "rediss":
        raise ValueError(f"broker {text!r}: ?ca= goes with rediss:// only")
    unknown = set(query) - {"ca"}
    if unknown:
        raise ValueError(f"broker {text!r}: unknown parameter {sorted(unknown)[0]!r}")
    return BrokerURL(
        scheme,
        host=parts.hostname,
        port=port,
        db=_db(text, parts.path.lstrip("/") or "0"),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        ca=ca,
    )


def _one(query: dict[str, list[str]], key: str, default: str | None) -> str | None:
    values = query.get(key)
    return values[-1] if values else default


def _db(text: str, value: str | None) -> int:
    if value is None or not value.isdigit():
        raise ValueError(f"broker {text!r}: the database is a number, not {value!r}")
    return int(value)
