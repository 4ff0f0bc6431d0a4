"""Email over SMTP (aiosmtplib): multipart text + HTML from Jinja2 templates."""

from __future__ import annotations

import logging
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import formataddr, make_msgid

import aiosmtplib
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from alerts.config import EMAIL_RE, EmailConfig
from alerts.digest import ended_sections, rows
from alerts.links import TaskLinks
from alerts.model import Notification
from alerts.notifiers import PermanentError, RetryableError
from alerts.text import one_line
from rules.model import AlertEvent

log = logging.getLogger("healthmon.delivery.email")
_env = Environment(
    loader=PackageLoader("alerts", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
    undefined=StrictUndefined,
    trim_blocks=True,
)


class SmtpSettings:
    def __init__(
        self,
        host: str,
        port: int,
        starttls: bool = False,
        use_tls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 15.0,
    ) -> None:
        self.host, self.port, self.starttls, self.use_tls = host, port, starttls, use_tls
        self.username, self.password, self.timeout_s = username, password, timeout_s


def recipients(config: EmailConfig, n: Notification) -> list[str]:
    out: list[str] = []
    for target in config.to:
        if target == "account_csm":
            out += [a.account.csm_email for a in n.alerts if a.account.csm_email]
        else:
            out.append(target)
    valid = []
    for addr in dict.fromkeys(out):
        if EMAIL_RE.match(addr):
            valid.append(addr)
        else:
            log.warning("skipping invalid recipient address %r", one_line(addr, 80))
    return valid


def build_message(
    config: EmailConfig,
    n: Notification,
    to: list[str],
    link_base_url: str = "",
    task_links: TaskLinks | None = None,
) -> EmailMessage:
    msg = EmailMessage(policy=default_policy)  # the default policy refuses CR/LF in header values
    new = set(n.new)
    fresh = [a for a in n.firing if a.alert_id in new] or n.firing
    names = list(dict.fromkeys(one_line(a.account.name or a.account_id, 60) for a in fresh))
    subject = f"[healthmon] {len(n.firing)} firing"
    if n.new:
        subject += f" ({len(n.new)} new)"
    if n.resolved:
        subject += f", {len(n.resolved)} resolved"
    if names:
        subject += ": " + ", ".join(names[:2]) + (f" and {len(names) - 2} more" if len(names) > 2 else "")
    msg["Subject"] = one_line(subject, 200)
    msg["From"] = formataddr(("healthmon", config.sender))
    msg["To"] = ", ".join(to)
    msg["Message-ID"] = make_msgid(domain="healthmon")
    msg["X-Healthmon-Group"] = one_line(n.fingerprint)
    links = None
    if task_links is not None:
        by = one_line(", ".join(to), 254)  # the addressee acts: the links are theirs

        def links(a: AlertEvent) -> list[tuple[str, str]]:
            task_id = n.tasks.get(a.alert_id)
            return [] if task_id is None else task_links.digest_links(task_id, a.account_id, by)

    firing_rows = rows(n, n.firing, link_base_url, links)
    ctx = {
        "firing_rows": firing_rows,
        "ended": ended_sections(n),
        "new_count": sum(r.new for r in firing_rows),
    }
    msg.set_content(_env.get_template("email.txt.j2").render(**ctx))
    msg.add_alternative(_env.get_template("email.html.j2").render(**ctx), subtype="html")
    return msg


class EmailNotifier:
    channel = "email"

    def __init__(
        self,
        config: EmailConfig,
        smtp: SmtpSettings,
        link_base_url: str = "",
        task_links: TaskLinks | None = None,
    ) -> None:
        self.config = config
        self.smtp = smtp
        self.link_base_url = link_base_url
        self.task_links = task_links

    async def notify(self, n: Notification) -> None:
        to = recipients(self.config, n)
        if not to:
            raise PermanentError("email: no valid recipient")
        msg = build_message(self.config, n, to, self.link_base_url, self.task_links)
        try:
            await aiosmtplib.send(
                msg,
                hostname=self.smtp.host,
                port=self.smtp.port,
                start_tls=self.smtp.starttls,
                use_tls=self.smtp.use_tls,
                username=self.smtp.username,
                password=self.smtp.password,
                timeout=self.smtp.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise PermanentError(f"email: recipients refused ({len(exc.recipients)})") from None
        except aiosmtplib.SMTPResponseException as exc:  # the server said no: it did not take it
            if 500 <= exc.code < 600:
                raise PermanentError(f"email: SMTP {exc.code}") from None
            raise RetryableError(f"email: SMTP {exc.code}", maybe_delivered=False) from None
        except aiosmtplib.SMTPConnectError as exc:  # no connection: nothing went out
            raise RetryableError(f"email: {type(exc).__name__}", maybe_delivered=False) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise RetryableError(f"email: {type(exc).__name__}") from None
