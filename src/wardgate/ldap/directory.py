"""The directory: is this the person's password, and who are they?

Safe where Open WebUI's and others' were not:
- an empty password never binds (RFC 4513 §5.1.2: a name with an empty password is an
  *unauthenticated* bind, which many servers, Active Directory among them, report as success);
- the typed name is escaped into the filter (RFC 4515 §3), so `*` or `)(uid=*` matches nothing;
- TLS (LDAPS) with certificate and host-name checks by default (`LDAP_USE_TLS`, `LDAP_VALIDATE_CERT`);
- more than one entry for a name is refused, not "the first";
- a directory that cannot be reached is a 503, never a fall-back to anything local.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import ssl
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from ldap3 import NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException, LDAPPasswordIsMandatoryError, LDAPSASLPrepError
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from wardgate.errors import ApiError, BadRequestError
from wardgate.identity.rules import INVALID_CREDENTIALS
from wardgate.identity.validation import normalise_email

log = logging.getLogger(__name__)
TIMEOUT = 5  # seconds to connect, and to wait for each answer (ldap3 wants an int)
DEADLINE = 15.0  # seconds for a whole sign-in: a server that answers a byte at a time is cut off
MAX_GROUPS = 256


class DirectoryUnavailableError(ApiError):
    """The directory did not answer (or its certificate was refused): 503, never a local fall-back."""

    status_code = 503
    code = "directory_unavailable"


UNAVAILABLE = "The directory cannot be reached right now. Please try again shortly."


@dataclass(frozen=True, slots=True)
class LdapConfig:
    """The directory's settings, as plain values."""

    host: str
    port: int
    use_tls: bool
    validate_cert: bool
    ca_cert_file: str | None
    ciphers: str | None
    app_dn: str | None
    app_password: str | None
    search_base: str
    search_filter: str | None
    username_attribute: str
    mail_attribute: str
    groups_attribute: str | None  # None: groups are not read
    label: str = "LDAP Server"

    @property
    def issuer(self) -> str:
        """What identities from this directory are keyed under (with the entry's id): its search
        base, not its address, so moving to LDAPS, a DNS name or another server keeps the accounts."""
        return f"ldap:{self.search_base}"[:512]


@dataclass(frozen=True, slots=True)
class LdapPerson:
    """Who the directory says signed in."""

    key: str  # entryUUID (objectGUID on Active Directory), else the DN
    dn: str
    email: str
    name: str
    groups: tuple[str, ...]


def tls_context(validate: bool, ca_file: str | None, ciphers: str | None) -> ssl.SSLContext:
    """The client TLS context: the system's authorities (or `ca_file`), the host name checked by
    Python's ssl (IP addresses in certificates included), unless `validate` is off."""
    context = ssl.create_default_context(cafile=ca_file)
    if ciphers:  # never the anonymous suites, whatever the list: they skip the certificate
        context.set_ciphers(f"{ciphers}:!aNULL:!eNULL")
    if not validate:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _VerifiedTls(Tls):
    """ldap3's `Tls`, wrapping sockets with a standard `SSLContext`: ldap3 2.9 turns the context's
    host-name check off and calls `ssl.match_hostname` itself (deprecated, removed in Python 3.12,
    where its backport ignores IP addresses), and drops a cipher list it cannot set."""

    def __init__(self, context: ssl.SSLContext, host: str) -> None:
        super().__init__(validate=context.verify_mode)
        self._context = context
        self._host = host

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=self._host,
        )


def _invalid() -> BadRequestError:
    return BadRequestError(INVALID_CREDENTIALS, code="invalid_credentials")


class LdapDirectory:
    """Verifies a name and password against the directory (synchronous: run in a worker thread)."""

    def __init__(self, config: LdapConfig) -> None:
        self.config = config

    def _server(self) -> Server:
        c = self.config
        tls = (
            _VerifiedTls(tls_context(c.validate_cert, c.ca_cert_file, c.ciphers), c.host)
            if c.use_tls
            else None
        )
        return Server(c.host, port=c.port, use_ssl=c.use_tls, tls=tls, get_info=NONE, connect_timeout=TIMEOUT)

    def _bound(
        self, server: Server, dn: str | None, password: str | None, deadline: _Deadline
    ) -> Connection | None:
        """A connection bound as `dn` (anonymously without one), or None when the bind is refused
        (a password that LDAP's SASLprep rejects, RFC 4013, included); DirectoryUnavailableError when
        the server cannot be reached. Referrals are never followed: they would carry the bind to
        another server, in the clear if its URL says `ldap://`."""
        conn = Connection(
            server,
            user=dn,
            password=password,
            receive_timeout=TIMEOUT,
            raise_exceptions=False,
            auto_referrals=False,
        )
        deadline.watch(conn)
        try:
            conn.open()
        except LDAPException as exc:
            log.warning("directory %s:%s unreachable: %s", self.config.host, self.config.port, exc)
            if conn.socket is not None:  # ldap3 leaves a socket that failed to connect open
                conn.socket.close()
            raise DirectoryUnavailableError(UNAVAILABLE) from None
        try:
            bound = conn.bind()
        except (LDAPSASLPrepError, LDAPPasswordIsMandatoryError):
            bound = False  # not a password the directory could hold: refused like a wrong one
        except LDAPException as exc:
            log.warning("directory %s:%s failed: %s", self.config.host, self.config.port, exc)
            _close(conn)
            raise DirectoryUnavailableError(UNAVAILABLE) from None
        if bound:
            return conn
        _close(conn)
        return None

    def verify(self, username: str, password: str) -> LdapPerson:
        """The person whose name and password these are; 400 (the password sign-in's message) when
        they are not, 503 when the directory cannot tell."""
        username = username.strip()
        if not username or not password or len(username) > 256 or len(password) > 4096:
            raise _invalid()
        server = self._server()
        with _Deadline(DEADLINE) as deadline:
            return self._verify(server, username, password, deadline)

    def _verify(self, server: Server, username: str, password: str, deadline: _Deadline) -> LdapPerson:
        c = self.config
        service = self._bound(server, c.app_dn, c.app_password, deadline)
        if service is None:
            log.error("the directory refused LDAP_APP_DN's bind")
            raise DirectoryUnavailableError(UNAVAILABLE)
        try:
            entry = self._find(service, username)
        finally:
            _close(service)
        # An unknown name costs a bind too, as a known one does: the time taken says nothing.
        dn = entry["dn"] if entry is not None else f"cn=wardgate-no-such-person,{c.search_base}"
        person = self._bound(server, dn, password, deadline)
        if person is None or entry is None:
            if person is not None:
                _close(person)
            raise _invalid()
        _close(person)
        return self._person(entry)

    def _find(self, conn: Connection, username: str) -> dict[str, Any] | None:
        c = self.config
        name_filter = f"({c.username_attribute}={escape_filter_chars(username)})"
        search = f"(&{name_filter}{c.search_filter})" if c.search_filter else name_filter
        wanted = [c.username_attribute, c.mail_attribute, "cn", "displayName", "entryUUID", "objectGUID"]
        if c.groups_attribute:
            wanted.append(c.groups_attribute)
        try:
            conn.search(c.search_base, search, SUBTREE, attributes=wanted, size_limit=2)
        except LDAPException:
            raise DirectoryUnavailableError(UNAVAILABLE) from None
        entries = [e for e in conn.response or () if e.get("type") == "searchResEntry"]
        if len(entries) != 1:  # nobody (the same answer as a wrong password), or ambiguous
            return None
        entry: dict[str, Any] = entries[0]
        names = [str(v).lower() for v in _values(entry, c.username_attribute)]
        if username.lower() not in names:  # the server matched loosely: not this name
            return None
        return entry

    def _person(self, entry: dict[str, Any]) -> LdapPerson:
        c = self.config
        mails = _values(entry, c.mail_attribute)
        if not mails:
            raise BadRequestError(
                "The directory has no email address for this account; ask your administrator.",
                code="ldap_no_email",
            )
        email = normalise_email(str(mails[0]))
        names = _values(entry, "displayName") or _values(entry, "cn")
        key = _entry_id(entry)
        groups: list[str] = []
        if c.groups_attribute:
            for dn in _values(entry, c.groups_attribute)[:MAX_GROUPS]:
                try:  # a group's name: its DN's first value, RFC 4514 escapes undone
                    groups.append(_unescape(str(parse_dn(str(dn))[0][1])))
                except (LDAPException, IndexError):
                    continue
        return LdapPerson(
            key=key,
            dn=str(entry["dn"]),
            email=email,
            name=str(names[0])[:255] if names else email,
            groups=tuple(sorted(set(groups))),
        )


_ESCAPED = re.compile(r"\\([0-9A-Fa-f]{2}|.)", re.DOTALL)


def _unescape(value: str) -> str:
    """An RFC 4514 attribute value as written in a DN (`eng\\,admins`, `eng\\2Cadmins`), unescaped;
    hex pairs are UTF-8 bytes."""
    out = bytearray()
    position = 0
    for match in _ESCAPED.finditer(value):
        out += value[position : match.start()].encode()
        escaped = match.group(1)
        out += bytes([int(escaped, 16)]) if len(escaped) == 2 else escaped.encode()
        position = match.end()
    out += value[position:].encode()
    return out.decode("utf-8", "replace")


def _entry_id(entry: dict[str, Any]) -> str:
    """The entry's lasting id: entryUUID (RFC 4530), Active Directory's objectGUID (16 bytes,
    little-endian), else its DN."""
    uuid_value = _values(entry, "entryUUID")
    if uuid_value:
        return str(uuid_value[0])[:255]
    guid = _values(entry, "objectGUID")
    if guid and isinstance(guid[0], bytes | bytearray) and len(guid[0]) == 16:
        return str(uuid.UUID(bytes_le=bytes(guid[0])))
    if guid and isinstance(guid[0], str):
        return guid[0].strip("{}")[:255]
    return str(entry["dn"])[:255]


class _Deadline:
    """Cuts the connections of one sign-in when it has taken `seconds` in all (ldap3's timeout is per
    read, so a directory that trickles bytes would hold a worker thread for ever): their sockets are
    shut down, the read in progress ends, and the sign-in answers 503."""

    def __init__(self, seconds: float) -> None:
        self._connections: list[Connection] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._timer.cancel()

    def watch(self, conn: Connection) -> None:
        """Cut this connection too when time runs out."""
        self._connections.append(conn)

    def _expire(self) -> None:
        log.warning("a directory sign-in took longer than %s s: cut off", DEADLINE)
        for conn in self._connections:
            if conn.socket is not None:
                with contextlib.suppress(OSError):
                    conn.socket.shutdown(socket.SHUT_RDWR)


def _close(conn: Connection) -> None:
    """Unbind, whatever state the connection is in (a failed one may not be able to send)."""
    try:
        conn.unbind()
    except LDAPException:
        if conn.socket is not None:
            conn.socket.close()


def _values(entry: dict[str, Any], attribute: str) -> list[Any]:
    found = (entry.get("attributes") or {}).get(attribute)
    if found is None:
        return []
    return list(found) if isinstance(found, list | tuple) else [found]
