"""
Client endpoint strings for C{echoplus send}: Twisted's C{clientFromString},
with mistakes reported in the user's words instead of Twisted's internals.

For the types the command documents (C{tcp:HOST:PORT}, C{tls:HOST:PORT},
C{ssl:HOST:PORT}, C{unix:PATH}) the string is checked before Twisted sees
it: a missing part is named (C{no PORT}), a port must be a number, a key
must be one the type takes (with a "did you mean"), and every C{.pem} file
of a C{trustRoots=} / C{caCertsDir=} directory must hold a certificate
(Twisted means to skip one that does not, but fails with an OpenSSL
traceback instead).  Any other type goes to Twisted unchanged, and what it
raises is reported as one line.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint

from echoplus.config import did_you_mean
from echoplus.endpoints import parse_description

__all__ = ["FORMS", "client_from_string"]

#: The documented client endpoint types: the parts each needs, in order.
FORMS: Mapping[str, tuple[str, ...]] = {
    "tcp": ("HOST", "PORT"),
    "tls": ("HOST", "PORT"),
    "ssl": ("HOST", "PORT"),
    "unix": ("PATH",),
}

_KEYS: Mapping[str, frozenset[str]] = {
    "tcp": frozenset({"host", "port", "timeout", "bindAddress"}),
    "tls": frozenset(
        {
            "host",
            "port",
            "timeout",
            "bindAddress",
            "certificate",
            "privateKey",
            "trustRoots",
            "endpoint",
        }
    ),
    "ssl": frozenset(
        {
            "host",
            "port",
            "timeout",
            "bindAddress",
            "certKey",
            "privateKey",
            "caCertsDir",
            "hostname",
        }
    ),
    "unix": frozenset({"path", "timeout", "checkPID", "lockfile"}),
}

#: The key naming a directory of CA certificates, by type.
_CA_DIRECTORY = {"tls": "trustRoots", "ssl": "caCertsDir"}


def _forms() -> str:
    return ", ".join(f"{kind}:{':'.join(parts)}" for kind, parts in FORMS.items())


def client_from_string(reactor: Any, description: str) -> IStreamClientEndpoint:
    """
    Build the client endpoint for C{description}, as Twisted's
    C{clientFromString} would.

    @raise ValueError: the string is malformed or names unusable files; the
        message quotes the string and says what it needs.
    """
    args, kwargs = parse_description(description)
    kind = args[0].lower() if args else ""
    try:
        if kind in FORMS:
            _check_form(kind, args[1:], kwargs)
            if _CA_DIRECTORY.get(kind) in kwargs:
                key = _CA_DIRECTORY[kind]
                _check_ca_directory(key, kwargs[key])
        return clientFromString(reactor, description)
    except Exception as error:  # endpoint plugins raise anything at all
        if isinstance(error, OSError) and error.filename:
            reason = f"cannot read {error.filename}: {error.strerror}"
        else:
            reason = str(error).rstrip(".") or type(error).__name__
        if kind not in FORMS:
            reason += f" (use {_forms()})"
        raise ValueError(f"bad endpoint {description!r}: {reason}") from None


def _check_form(kind: str, positional: list[str], kwargs: Mapping[str, str]) -> None:
    """
    Check the parts and keys of a documented endpoint type.

    @raise ValueError: one is missing, malformed or unknown.
    """
    parts = FORMS[kind]
    usage = f"{kind}:{':'.join(parts)}"
    for key in kwargs:
        if key not in _KEYS[kind]:
            raise ValueError(
                f"{kind}: takes no key {key!r}{did_you_mean(key, _KEYS[kind])}"
            )
    values = list(positional)
    given: dict[str, str] = {}
    for part in parts:
        keyword = part.lower()
        if keyword in kwargs:
            given[part] = kwargs[keyword]
        elif values:
            given[part] = values.pop(0)
    missing = [part for part in parts if not given.get(part)]
    if missing:
        raise ValueError(f"no {' and no '.join(missing)}; use {usage}")
    if values:
        raise ValueError(f"too many parts ({':'.join(values)}); use {usage}")
    port = given.get("PORT")
    if port is not None and not port.isdigit():
        raise ValueError(f"PORT must be a number, not {port!r}; use {usage}")


def _check_ca_directory(key: str, path: str) -> None:
    """
    Check that every C{.pem} file in C{path} holds a certificate, as
    Twisted reads them.

    @raise ValueError: one does not, or C{path} is no directory; the
        message names the file.
    """
    from twisted.internet.ssl import Certificate

    if not os.path.isdir(path):
        raise ValueError(f"{key}={path}: no such directory")
    for name in sorted(os.listdir(path)):
        if not name.lower().endswith(".pem"):
            continue
        file = os.path.join(path, name)
        try:
            with open(file, "rb") as stream:
                data = stream.read()
        except OSError:
            continue  # Twisted skips unreadable files too
        try:
            Certificate.loadPEM(data)
        except Exception:  # OpenSSL.crypto.Error, and nothing else is expected
            raise ValueError(
                f"{key}: {file} is not a PEM certificate (only CA certificates "
                "belong in this directory, not keys)"
            ) from None
