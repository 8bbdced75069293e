"""Alerting: telling the collecting organisation, by e-mail and by a DingTalk or WeCom group
robot, when an ingestion run fails (a dataset or the planning failed: `summarise` fails the run)
or the freshness DAG fails (data late, failing or never loaded).

Configured without code: `ETL_ALERT_EMAIL` (addresses; mail goes through Airflow's SMTP
connection, `smtp_default` or `[email] email_conn_id`, with the SMTP provider's `SmtpNotifier`)
and `ETL_ALERT_WEBHOOK_CONN_ID` (an Airflow HTTP connection: the robot's URL in its host, its
token in its password, a DingTalk signing secret in its extra `secret`). The DAG file attaches
`notifiers(kind)` as each DAG's `on_failure_callback` when it is parsed; Airflow runs them when
a run fails (in the DAG processor; in-process under `dag.test()`).

The message is Chinese first: `【双重预防数据归集】dual_prevention_daily 2026-12-05 失败：…`,
naming the DAG, the run's day (CST: the day an ingestion run ingested, the day a freshness run
checked), the failed units' datasets from the target's run records (`ingest_run`, by the DAG
run's id) or the late ones (the timeliness check, again), and a link to the run when Airflow's
`[api] base_url` is set. Secrets, ID numbers and mobiles are masked; a robot's URL and token
never reach a log or a message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import BaseNotifier

from etl.common import settings

log = logging.getLogger("etl")

TITLE = "【双重预防数据归集】"  # also the keyword a DingTalk robot may be set to require
CST = ZoneInfo("Asia/Shanghai")
LISTED = 30          # datasets named in a message; the rest are counted
MESSAGE_CHARS = 4000  # DingTalk and WeCom text messages take a few thousand characters
TIMEOUT = 10
WECOM_BYTES = 2048    # a WeCom robot's text content; it refuses longer ones
ROBOT_BYTES = 18000   # DingTalk's is 20,000
STATUS_ZH = {"late": "迟报", "failing": "失败", "never": "从未上报", "pending": "待首次上报",
             "on_time": "按时"}


# --- what the message says -------------------------------------------------------------------


def run_day(context: Mapping[str, Any]) -> str:
    """The run's day in CST: the start of the data interval (the day or week ingested), else
    the logical date, else when the run was due."""
    dag_run = context.get("dag_run")
    for when in (context.get("data_interval_start"), getattr(dag_run, "data_interval_start", None),
                 context.get("logical_date"), getattr(dag_run, "logical_date", None),
                 getattr(dag_run, "run_after", None)):
        if isinstance(when, datetime):
            return when.astimezone(CST).date().isoformat()
    return datetime.now(CST).date().isoformat()


def run_link(dag_id: str, run_id: str | None) -> str | None:
    """The run in Airflow's UI, when `[api] base_url` says where that is."""
    try:
        from airflow.sdk.configuration import conf

        base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    except Exception:  # pragma: no cover - outside Airflow
        base = ""
    if not base or not run_id:
        return None
    return f"{base}/dags/{urllib.parse.quote(dag_id)}/runs/{urllib.parse.quote(run_id, safe='')}"


def failed_datasets(run_id: str) -> list[str]:
    """The datasets whose latest record in this DAG run failed, as `unit txCode: message`."""
    import sqlalchemy as sa

    from etl import target
    from etl.orchestration import tasks

    engine = target.connect(tasks.target_url(), "the target (alerting)")
    try:
        r = target.ingest_run
        with engine.connect() as conn:
            rows = conn.execute(sa.select(r.c.mapping, r.c.orgNo, r.c.txCode, r.c.status, r.c.message)
                                .where(r.c.dagRunId == run_id).order_by(r.c.runKey)).all()
    finally:
        engine.dispose()
    latest = {(m, org, tx): (status, message) for m, org, tx, status, message in rows}
    return [f"{m or org} {tx or '（映射文件无效）'}：{(message or '').splitlines()[0][:300] if message else ''}"
            for (m, org, tx), (status, message) in latest.items() if status == "failed"]


def late_datasets() -> list[str]:
    """The datasets late, failing or never loaded, as the freshness task found them."""
    from etl.orchestration import tasks
    from etl.report import freshness

    out = []
    for s in tasks.freshness_statuses():
        if freshness.needs_attention(s):
            last = s.last_success.astimezone(CST).strftime("%Y-%m-%d %H:%M") if s.last_success else "—"
            out.append(f"{s.mapping or s.org_no} {s.tx_code or '（映射文件无效）'} "
                       f"{STATUS_ZH.get(s.status, s.status)}（最近成功 {last}）")
    return out


def compose(context: Mapping[str, Any], kind: str) -> tuple[str, str]:
    """(subject, body) of the alert for a failed run of an ingestion (`kind` "ingestion") or
    the freshness DAG ("freshness"); masked."""
    from etl.common.masking import cap

    dag = context.get("dag")
    dag_id = getattr(dag, "dag_id", None) or getattr(context.get("dag_run"), "dag_id", "?")
    run_id = context.get("run_id") or getattr(context.get("dag_run"), "run_id", None)
    ti = context.get("ti")
    try:
        found = late_datasets() if kind == "freshness" else failed_datasets(run_id or "")
        problem = None
    except Exception as e:  # the alert goes out anyway, saying what could not be read
        found, problem = [], f"{type(e).__name__}: {e}"
    if kind == "freshness":
        headline = (f"数据迟报：{len(found)} 个数据集迟报、失败或从未上报" if found
                    else "时效检查失败")
        english = f"{dag_id}: {len(found)} dataset(s) late, failing or never loaded"
    else:
        headline = f"失败：{len(found)} 个数据集失败" if found else "失败"
        english = f"{dag_id} run failed: {len(found)} dataset(s) failed"
    subject = cap(f"{TITLE}{dag_id} {run_day(context)} {headline}", 200)
    lines = [subject, ""]
    lines += [f"- {f}" for f in found[:LISTED]]
    if len(found) > LISTED:
        lines.append(f"- …另有 {len(found) - LISTED} 个")
    if not found:
        task = getattr(ti, "task_id", None)
        lines.append(f"失败的任务：{task}" if task else f"原因：{context.get('reason') or '—'}")
    if problem:
        lines.append(f"（未能读取明细：{problem[:300]}；见该运行的任务日志）")
    link = run_link(dag_id, run_id)
    lines += ["", f"运行 / run: {link or run_id}", english]
    return subject, cap("\n".join(lines), MESSAGE_CHARS)


# --- the notifiers ---------------------------------------------------------------------------


class EmailAlert(SmtpNotifier):
    """The SMTP provider's notifier, with the message composed for the failed run."""

    def __init__(self, to: list[str], kind: str, **kwargs: Any):
        super().__init__(to=to, **kwargs)
        self.kind = kind

    def notify(self, context: Any) -> None:
        self.subject, body = compose(context, self.kind)
        self.html_content = as_html(body)
        self.from_email = self.from_email or self.sender()
        super().notify(context)

    def sender(self) -> str:
        """The connection's extra from_email, else Airflow's `[email] from_email`."""
        from airflow.sdk import Connection
        from airflow.sdk.configuration import conf

        from etl.common.errors import ConfigError

        extra = Connection.get(self.smtp_conn_id).extra_dejson or {}
        found = extra.get("from_email") or conf.get("email", "from_email", fallback=None)
        if not found:
            raise ConfigError(f"Airflow connection {self.smtp_conn_id!r}: set its extra "
                              f"from_email (or [email] from_email) to send alerts")
        return found

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Nothing here is a Jinja template: the message is composed for the run. (Under
        `dag.test()` the callback's `dag` is the serialized one, which renders nothing.)"""


def as_html(body: str) -> str:
    return f"<pre style=\"white-space: pre-wrap\">{html.escape(body)}</pre>"


class RobotAlert(BaseNotifier):
    """A DingTalk or WeCom group robot: a JSON text message POSTed to the URL an Airflow HTTP
    connection holds (both take `{"msgtype": "text", "text": {"content": ...}}`)."""

    def __init__(self, conn_id: str, kind: str):
        super().__init__()
        self.conn_id = conn_id
        self.kind = kind

    def notify(self, context: Any) -> None:
        subject, body = compose(context, self.kind)
        post(self.conn_id, body)

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """No templates (as EmailAlert)."""


def robot_url(conn_id: str) -> str:
    """The robot's URL from the connection: its host (a whole URL, or a host name with the
    connection's type as scheme, port and schema as path), its password appended as the token
    (`access_token` for DingTalk, `key` for WeCom; extra `token_param` to choose), and, with
    extra `secret`, DingTalk's signature. Secrets are registered with the masker."""
    from airflow.sdk import Connection

    from etl.common.errors import ConfigError
    from etl.common.masking import register_secrets

    conn = Connection.get(conn_id)
    extra = conn.extra_dejson or {}
    register_secrets([conn.password, extra.get("secret")])
    host = (conn.host or "").strip()
    if not host:
        raise ConfigError(f"Airflow connection {conn_id!r} has no host: give the robot's URL")
    if "://" not in host:
        scheme = conn.conn_type if conn.conn_type in ("http", "https") else "https"
        host = f"{scheme}://{host}{f':{conn.port}' if conn.port else ''}/{(conn.schema or '').lstrip('/')}"
    if settings.flag("ETL_REQUIRE_TLS") and not host.lower().startswith("https://"):
        raise ConfigError(f"Airflow connection {conn_id!r}: ETL_REQUIRE_TLS=1 and the robot's URL "
                          f"is not https")
    query: dict[str, str] = {}
    if conn.password:
        param = extra.get("token_param") or ("key" if "qyapi.weixin.qq.com" in host else "access_token")
        query[param] = conn.password
    if extra.get("secret"):  # DingTalk's 加签: timestamp and an HMAC of it
        stamp = str(round(time.time() * 1000))
        digest = hmac.new(str(extra["secret"]).encode(), f"{stamp}\n{extra['secret']}".encode(),
                          hashlib.sha256).digest()
        query.update(timestamp=stamp, sign=base64.b64encode(digest).decode())
    if not query:
        return host
    return host + ("&" if "?" in host else "?") + urllib.parse.urlencode(query)


def fit(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, whole characters, marked when cut."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit - len("…".encode())].decode("utf-8", "ignore") + "…"


def post(conn_id: str, content: str) -> None:
    """POST the text message; a refusal (HTTP error, or the robot's `errcode`) raises, saying
    what the robot said, never its URL."""
    from etl.common.masking import mask_message

    url = robot_url(conn_id)
    content = fit(content, WECOM_BYTES if "qyapi.weixin.qq.com" in url else ROBOT_BYTES)
    body = json.dumps({"msgtype": "text", "text": {"content": content}}, ensure_ascii=False)
    request = urllib.request.Request(url, data=body.encode("utf-8"), method="POST",
                                     headers={"Content-Type": "application/json; charset=utf-8"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310 - a configured URL
            answer = response.read(10_000).decode("utf-8", "replace")
    except OSError as e:  # HTTPError and URLError say no URL
        raise RuntimeError(mask_message(f"robot {conn_id}: {e}")) from None
    try:
        said = json.loads(answer) if answer.strip() else {}
    except ValueError:
        said = {}
    if isinstance(said, dict) and said.get("errcode") not in (None, 0):
        raise RuntimeError(mask_message(f"robot {conn_id} refused the message: errcode "
                                        f"{said.get('errcode')}: {said.get('errmsg')}"))
    log.info("alert sent to robot %s", conn_id)


def notifiers(kind: str) -> list[BaseNotifier] | None:
    """The notifiers `ETL_ALERT_EMAIL` and `ETL_ALERT_WEBHOOK_CONN_ID` ask for, for a DAG of
    `kind` "ingestion" or "freshness"; None when neither is set (an empty list would still have
    the scheduler send the DAG processor a callback request for every failed run)."""
    out: list[BaseNotifier] = []
    to = [a.strip() for a in (settings.text("ETL_ALERT_EMAIL") or "").split(",") if a.strip()]
    if to:
        out.append(EmailAlert(to, kind))
    conn_id = settings.text("ETL_ALERT_WEBHOOK_CONN_ID")
    if conn_id:
        out.append(RobotAlert(conn_id, kind))
    return out or None


def send_test() -> list[str]:
    """Send a test message through every channel the settings turn on, where Airflow's
    connections are (docs/airflow.md, Alerts); the channels it went to."""
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    text = f"{TITLE}测试消息：告警可以送达这里。 / test message: alerts reach this channel."
    sent = []
    for n in notifiers("test") or ():
        if isinstance(n, EmailAlert):
            with SmtpHook(smtp_conn_id=n.smtp_conn_id) as hook:
                hook.send_email_smtp(to=n.to, subject=f"{TITLE}测试消息",
                                     html_content=as_html(text), from_email=n.sender())
            sent.append(f"e-mail to {', '.join(n.to)} (connection {n.smtp_conn_id})")
        elif isinstance(n, RobotAlert):
            post(n.conn_id, text)
            sent.append(f"robot (connection {n.conn_id})")
    return sent
