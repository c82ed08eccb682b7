"""Sending one email through the site's mail server (`SMTP_*`), with the standard library's `smtplib`.

Blocking by design: callers run `SmtpMailer.send` in a worker thread. Every connection and command
is bounded by `SMTP_TIMEOUT`. With `starttls` (the default) the server must offer STARTTLS and its
certificate must verify against the system CAs or `SMTP_CA_CERT_FILE`: a server that does not offer
it gets nothing, not the message in clear text (RFC 3207 §4: a client that requires TLS must not
fall back). `tls` is implicit TLS from the first byte (RFC 8314, port 465); `none` is plain SMTP,
which the settings allow only without a password or to this machine.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Literal

from wardgate.errors import WardgateError

Security = Literal["starttls", "tls", "none"]


class MailError(WardgateError):
    """The mail server could not be reached, refused TLS or refused the message."""


@dataclass(frozen=True, slots=True, repr=False)
class MailServer:
    """Where and how to send (`SMTP_HOST`, `SMTP_PORT`, `SMTP_SECURITY`, ...); never shows the password."""

    host: str
    port: int
    security: Security
    sender: str
    username: str = ""
    password: str = field(default="")
    ca_file: Path | None = None
    timeout: float = 10.0

    def __repr__(self) -> str:
        return f"MailServer({self.host}:{self.port}, {self.security}, from {self.sender})"

    def tls_context(self) -> ssl.SSLContext:
        """Certificate and host name verified, against `ca_file` when given."""
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)


class SmtpMailer:
    """Sends plain-text messages through one `MailServer`."""

    def __init__(self, server: MailServer) -> None:
        self.server = server
        self._context = server.tls_context() if server.security != "none" else None

    def compose(self, to: str, subject: str, body: str) -> EmailMessage:
        """A plain-text message from the configured sender."""
        message = EmailMessage()
        message["From"] = self.server.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = make_msgid(domain=self.server.sender.rpartition("@")[2] or None)
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
        message.set_content(body)
        return message

    def send(self, message: EmailMessage) -> None:
        """Deliver `message` (blocking: run it in a worker thread); MailError when it cannot."""
        s = self.server
        try:
            with self._connect() as smtp:
                if s.security == "starttls":
                    smtp.ehlo()
                    if not smtp.has_extn("starttls"):
                        raise MailError(f"{s.host}:{s.port} does not offer STARTTLS; nothing was sent")
                    smtp.starttls(context=self._context)
                    smtp.ehlo()
                if s.username:
                    smtp.login(s.username, s.password)
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:  # ssl.SSLError and timeouts are OSErrors
            raise MailError(f"{s.host}:{s.port}: {type(exc).__name__}: {exc}") from None

    def _connect(self) -> smtplib.SMTP:
        s = self.server
        if s.security == "tls":
            return smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=self._context)
        return smtplib.SMTP(s.host, s.port, timeout=s.timeout)
