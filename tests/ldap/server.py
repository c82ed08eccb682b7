"""A private OpenLDAP `slapd` on loopback for the directory tests: LDAP and LDAPS (a throwaway CA
from trustme), people and groups (memberOf), a service account. Debian's slapd, started in the
foreground by these tests and stopped by its process id; nothing of the system's slapd is used."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trustme
from ldap3 import Connection, Server
from ldap3.utils.hashed import hashed

from tests.servers import free_port, service_missing, stop

BASE = "dc=example,dc=org"
ADMIN_DN, ADMIN_PASSWORD = f"cn=admin,{BASE}", "admin-secret"
APP_DN, APP_PASSWORD = f"cn=app,{BASE}", "app-secret"
PEOPLE = {  # uid: (password, mail or None, cn, ou)
    "alice": ("alice-password", "alice@example.org", "Alice Directory", "people"),
    "bob": ("bob-password", "bob@example.org", "Bob Directory", "people"),
    "nomail": ("nomail-password", None, "No Mail", "people"),
    "twin": ("twin-password", "twin1@example.org", "Twin One", "people"),
    "twin2": ("twin-password", "twin2@example.org", "Twin Two", "others"),
    "star": ("star-password", "star@example.org", "Star (*) Person", "people"),
}
GROUPS = {"ai-users": ["alice"], "eng,admins": ["bob"]}

CONFIG = """
include         /etc/ldap/schema/core.schema
include         /etc/ldap/schema/cosine.schema
include         /etc/ldap/schema/inetorgperson.schema
include         /etc/ldap/schema/nis.schema
modulepath      /usr/lib/ldap
moduleload      back_mdb
moduleload      memberof
pidfile         {run}/slapd.pid
argsfile        {run}/slapd.args
TLSCACertificateFile  {run}/ca.pem
TLSCertificateFile    {run}/server.pem
TLSCertificateKeyFile {run}/server.key
database        mdb
maxsize         104857600
suffix          "{base}"
rootdn          "{admin}"
rootpw          {admin_password}
directory       {run}/db
index           objectClass,uid,mail,member eq
access to attrs=userPassword
        by self write
        by anonymous auth
        by * none
access to *
        by dn.exact="{app}" read
        by self read
        by * none
overlay         memberof
memberof-group-oc  groupOfNames
memberof-member-ad member
memberof-refint    TRUE
"""


@dataclass(frozen=True)
class Directory:
    """A running slapd: where it listens and the CA its certificate chains to."""

    ldap_port: int
    ldaps_port: int
    ca_file: Path
    other_ca_file: Path  # a CA that did not sign it

    def env(self, **overrides: str) -> dict[str, str]:
        """wardgate's variables for this directory (LDAPS, verified)."""
        return {
            "ENABLE_LDAP": "true",
            "LDAP_SERVER_HOST": "127.0.0.1",  # slapd listens on IPv4 loopback only
            "LDAP_SERVER_PORT": str(self.ldaps_port),
            "LDAP_USE_TLS": "true",
            "LDAP_CA_CERT_FILE": str(self.ca_file),
            "LDAP_APP_DN": APP_DN,
            "LDAP_APP_PASSWORD": APP_PASSWORD,
            "LDAP_SEARCH_BASE": BASE,
            "LDAP_SEARCH_FILTERS": "(objectClass=inetOrgPerson)",
            **overrides,
        }


def _slapd() -> str:
    found = shutil.which("slapd") or ("/usr/sbin/slapd" if Path("/usr/sbin/slapd").exists() else None)
    if found is None:
        service_missing("OpenLDAP slapd", "run ./scripts/test (it installs Debian's slapd)")
    return found


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _seed(ldap_port: int) -> None:
    conn = Connection(Server("127.0.0.1", port=ldap_port), ADMIN_DN, ADMIN_PASSWORD, auto_bind=True)
    conn.add(BASE, ["dcObject", "organization"], {"o": "Example", "dc": "example"})
    conn.add(APP_DN, ["applicationProcess", "simpleSecurityObject"], {"userPassword": APP_PASSWORD})
    for ou in ("people", "others", "groups"):
        conn.add(f"ou={ou},{BASE}", ["organizationalUnit"], {"ou": ou})
    for uid, (password, mail, cn, ou) in PEOPLE.items():
        attributes = {"uid": "twin" if uid == "twin2" else uid, "cn": cn, "sn": cn.split()[-1]}
        attributes["userPassword"] = hashed("SALTED_SHA", password)  # type: ignore[arg-type]
        if mail:
            attributes["mail"] = mail
        conn.add(f"uid={uid},ou={ou},{BASE}", ["inetOrgPerson"], attributes)
    for name, members in GROUPS.items():
        dns = [f"uid={m},ou=people,{BASE}" for m in members]
        conn.add(f"cn={name.replace(',', chr(92) + ',')},ou=groups,{BASE}", ["groupOfNames"], {"member": dns})
    assert conn.result["description"] == "success", conn.result
    conn.unbind()


@contextmanager
def running_slapd(run: Path) -> Iterator[Directory]:
    """Start slapd in `run`, seed it, yield it, stop it."""
    binary = _slapd()
    (run / "db").mkdir(parents=True)
    ca, other = trustme.CA(), trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    (run / "ca.pem").write_bytes(ca.cert_pem.bytes())
    (run / "other-ca.pem").write_bytes(other.cert_pem.bytes())
    (run / "server.pem").write_bytes(b"".join(c.bytes() for c in cert.cert_chain_pems))
    (run / "server.key").write_bytes(cert.private_key_pem.bytes())
    (run / "slapd.conf").write_text(
        CONFIG.format(run=run, base=BASE, admin=ADMIN_DN, admin_password=ADMIN_PASSWORD, app=APP_DN)
    )
    ldap_port, ldaps_port = free_port(), free_port()
    urls = f"ldap://127.0.0.1:{ldap_port}/ ldaps://127.0.0.1:{ldaps_port}/"
    with (run / "slapd.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, "-d", "0", "-f", str(run / "slapd.conf"), "-h", urls],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        while not (_listening(ldap_port) and _listening(ldaps_port)):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"slapd did not start: {(run / 'slapd.log').read_text()[-2000:]}")
            time.sleep(0.05)
        _seed(ldap_port)
        yield Directory(ldap_port, ldaps_port, run / "ca.pem", run / "other-ca.pem")
    finally:
        stop(process)
