"""Alerting and Assets (issue 24, items 6 and 8): a failed ingestion or freshness run e-mails the
collecting organisation (the SMTP provider's notifier, through Airflow's SMTP connection) and
tells a DingTalk/WeCom group robot (a JSON POST to the URL an Airflow HTTP connection holds),
configured by ETL_ALERT_EMAIL and ETL_ALERT_WEBHOOK_CONN_ID alone; and each shard's load updates
the asset of each txCode it loaded, so that a DAG scheduled on `dual_prevention_09` is queued.

Real receivers on loopback (aiosmtpd, http.server) and real `dag.test()` runs: no mocks.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers import BROKEN_MAPPING

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "mappings"
CST = ZoneInfo("Asia/Shanghai")
TOKEN = "robot-token-5ec7e7"
BASE_URL = "http://airflow.example.cn:8080"


@pytest.fixture(autouse=True)
def _own_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'target.sqlite'}"
    monkeypatch.setenv("ETL_TARGET_URL", url)
    monkeypatch.delenv("AIRFLOW_CONN_ETL_TARGET", raising=False)
    return url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mailbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[email.message.EmailMessage]]:
    """An SMTP server on loopback, as Airflow's `smtp_default` connection."""
    from aiosmtpd.controller import Controller

    received: list[email.message.EmailMessage] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
            received.append(message)
            return "250 OK"

    port = _free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": port,
        "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "etl@example.cn",
                  "retry_limit": 0, "timeout": 10}}))
    monkeypatch.setenv("ETL_ALERT_EMAIL", "ops@example.cn, safety@example.cn")
    try:
        yield received
    finally:
        controller.stop()


@pytest.fixture
def robot(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, dict]]]:
    """A DingTalk-like robot on loopback: records each POST (path with query, JSON body)."""
    received: list[tuple[str, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, json.loads(body.decode("utf-8"))))
            answer = b'{"errcode": 0, "errmsg": "ok"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AIRFLOW_CONN_TEST_ROBOT", json.dumps({
        "conn_type": "http", "host": f"http://127.0.0.1:{server.server_port}/robot/send",
        "password": TOKEN}))
    monkeypatch.setenv("ETL_ALERT_WEBHOOK_CONN_ID", "test_robot")
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE_URL)
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()


def _mapping(folder: Path, name: str, source: dict) -> Path:
    import yaml

    from etl.onboarding.demo_data import UNIT_B

    raw = yaml.safe_load((MAPPINGS / f"{UNIT_B}.yaml").read_text(encoding="utf-8"))
    raw["source"] = source
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def _text(message: email.message.EmailMessage) -> str:
    import html

    return html.unescape(message.get_body(("html", "plain")).get_content())


# --- without Airflow running --------------------------------------------------------------------


def test_no_alert_setting_attaches_no_notifier(monkeypatch: pytest.MonkeyPatch) -> None:
    from etl.orchestration import alerts

    monkeypatch.delenv("ETL_ALERT_EMAIL", raising=False)
    monkeypatch.delenv("ETL_ALERT_WEBHOOK_CONN_ID", raising=False)
    assert alerts.notifiers("ingestion") is None  # no callback: no callback request either
    monkeypatch.setenv("ETL_ALERT_EMAIL", "a@b.cn,c@d.cn")
    monkeypatch.setenv("ETL_ALERT_WEBHOOK_CONN_ID", "dingtalk_ops")
    email_alert, robot_alert = alerts.notifiers("freshness")
    assert email_alert.to == ["a@b.cn", "c@d.cn"] and robot_alert.conn_id == "dingtalk_ops"


def test_the_message_is_chinese_first_names_the_failed_datasets_and_masks_personal_data(
        _own_target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy as sa

    from etl import target
    from etl.orchestration import alerts

    engine = target.connect(_own_target)
    target.ensure_schema(engine)
    started = datetime(2026, 12, 6, 0, 5, tzinfo=CST)
    with engine.begin() as conn:
        conn.execute(sa.insert(target.ingest_run), [
            {"runId": "r", "dagRunId": "scheduled__2026-12-04T16:00:00+00:00", "orgNo": org,
             "txCode": "09", "mapping": name, "mode": "incremental", "status": status,
             "extracted": 0, "inserted": 0, "updated": 0, "deleted": 0, "unchanged": 0,
             "rejected": 0, "duplicates": 0, "warnings": 0, "message": message,
             "startedAt": started, "endedAt": started + timedelta(minutes=1)}
            for org, name, status, message in (
                ("91320115MA1R7KX30X", "南京化工", "failed",
                 "source refused: 负责人 320102199001011234 电话 13812345678"),
                ("91320506MA1W3L8P7L", "苏州电梯", "success", None))])
    engine.dispose()
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE_URL)

    class Dag:
        dag_id = "dual_prevention_daily"

    subject, body = alerts.compose({"dag": Dag(), "run_id": "scheduled__2026-12-04T16:00:00+00:00",
                                    "data_interval_start": datetime(2026, 12, 5, tzinfo=CST)},
                                   "ingestion")
    assert subject == "【双重预防数据归集】dual_prevention_daily 2026-12-05 失败：1 个数据集失败"
    assert body.startswith(subject)
    assert "- 南京化工 09：source refused" in body and "苏州电梯" not in body
    assert "320102199001011234" not in body and "13812345678" not in body
    assert (f"{BASE_URL}/dags/dual_prevention_daily/runs/"
            "scheduled__2026-12-04T16%3A00%3A00%2B00%3A00") in body


# --- real Airflow runs --------------------------------------------------------------------------


@pytest.mark.airflow
def test_a_late_unit_fails_the_freshness_run_and_mails_and_tells_the_robot(
        airflow_db, dagbag, tmp_path: Path, staging: Path, mailbox, robot,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from etl.onboarding.demo_data import UNIT_B, make_demo_sources

    made = make_demo_sources(tmp_path / "demo")
    folder = tmp_path / "mappings"
    folder.mkdir()
    mapping = _mapping(folder, "苏州电梯", {"url": f"sqlite:///{made[UNIT_B]}"})
    long_ago = (datetime.now(CST) - timedelta(days=30)).timestamp()
    os.utime(mapping, (long_ago, long_ago))  # onboarded a month ago, never loaded: overdue
    monkeypatch.setenv("ETL_MAPPINGS_DIR", str(folder))

    check = dagbag().dags["dual_prevention_freshness"]  # parsed now: the notifiers from the env
    day = datetime(2026, 12, 6, 8, tzinfo=CST)
    dr = check.test(logical_date=day)
    assert str(dr.state) == "failed"

    assert len(mailbox) == 1, "no mail arrived"
    mail = mailbox[0]
    assert mail["X-Envelope-To"] == "ops@example.cn, safety@example.cn"
    assert mail["From"] == "etl@example.cn"
    assert mail["Subject"] == ("【双重预防数据归集】dual_prevention_freshness 2026-12-06 数据迟报："
                               "9 个数据集迟报、失败或从未上报")
    text = _text(mail)
    assert "- 苏州电梯 01 从未上报（最近成功 —）" in text and "- 苏州电梯 09 从未上报" in text
    assert f"{BASE_URL}/dags/dual_prevention_freshness/runs/" in text

    assert len(robot) == 1, "no POST reached the robot"
    path, body = robot[0]
    assert path == f"/robot/send?access_token={TOKEN}"
    assert body["msgtype"] == "text"
    content = body["text"]["content"]
    assert content.startswith("【双重预防数据归集】dual_prevention_freshness 2026-12-06 数据迟报")
    assert "苏州电梯 01 从未上报" in content and TOKEN not in content


@pytest.mark.airflow
def test_a_failed_unit_fails_the_daily_run_alerts_and_the_loaded_09_wakes_a_dag_scheduled_on_it(
        airflow_db, dagbag, tmp_path: Path, staging: Path, mailbox, robot,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two shards: 南京化工 (an invalid mapping) fails its own; 苏州电梯's loads 09, so its
    load adds an event to `dual_prevention_09` (and none to 06 or 07: not loaded), which queues a
    DAG scheduled on that asset; summarise fails the run, and the alert names 南京化工."""
    import sqlalchemy as sa
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    from etl.onboarding.demo_data import UNIT_B, make_demo_sources

    made = make_demo_sources(tmp_path / "demo")
    folder = tmp_path / "mappings"
    folder.mkdir()
    _mapping(folder, "苏州电梯", {"url": f"sqlite:///{made[UNIT_B]}"})
    (folder / "南京化工.yaml").write_text(BROKEN_MAPPING, encoding="utf-8")
    monkeypatch.setenv("ETL_MAPPINGS_DIR", str(folder))

    # the downstream DAG of docs/airflow.md (Assets), in the metadata database and unpaused
    downstream = tmp_path / "downstream"
    downstream.mkdir()
    (downstream / "follows_09.py").write_text(
        "import pendulum\n"
        "from airflow.sdk import Asset, dag, task\n"
        "HIDDEN_DANGERS = Asset(name='dual_prevention_09', uri='x-dual-prevention://target/09',\n"
        "                       group='dual-prevention')\n"
        "@dag(schedule=[HIDDEN_DANGERS], start_date=pendulum.datetime(2025, 1, 1, tz='Asia/Shanghai'),\n"
        "     catchup=False, tags=['example'])\n"
        "def follows_09():\n"
        "    @task\n"
        "    def read(): pass\n"
        "    read()\n"
        "follows_09()\n", encoding="utf-8")
    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(downstream), bundle_path=downstream, bundle_name="dags-folder")
    assert bag.import_errors == {} and bag.dag_ids == ["follows_09"]
    sync_bag_to_db(bag, "dags-folder", None)
    with create_session() as session:
        session.get(DagModel, "follows_09").is_paused = False

    dag = dagbag().dags["dual_prevention_daily"]
    dr = dag.test(logical_date=datetime(2026, 12, 6, tzinfo=CST),
                  run_conf={"tx_codes": ["09"], "mode": "full", "units_per_shard": 1})
    assert str(dr.state) == "failed"

    with create_session() as session:
        events = session.execute(
            sa.select(AssetModel.name, AssetEvent.source_task_id, AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetEvent.source_run_id == dr.run_id)).all()
        by_name = {name: (task, extra) for name, task, extra in events}
        assert set(by_name) == {"dual_prevention_09", "dual_prevention_ingestion"}, events
        task, extra = by_name["dual_prevention_09"]
        assert task == "ingest.load"
        assert extra["txCode"] == "09" and extra["unit_count"] == 1 and extra["rows"] > 0
        assert [u["unit"] for u in extra["units"]] == ["苏州电梯"]
        assert extra["units"][0]["orgNo"] == "91320506MA1W3L8P7L"
        asset_09 = session.scalar(sa.select(AssetModel).where(AssetModel.name == "dual_prevention_09"))
        assert "follows_09" in session.scalars(sa.select(AssetDagRunQueue.target_dag_id).where(
            AssetDagRunQueue.asset_id == asset_09.id)).all()
        session.get(DagModel, "follows_09").is_paused = True

    assert len(mailbox) == 1 and len(robot) == 1
    subject = mailbox[0]["Subject"]
    assert subject.startswith("【双重预防数据归集】dual_prevention_daily 2026-12-05 失败："), subject
    for said in (_text(mailbox[0]), robot[0][1]["text"]["content"]):
        assert "- 南京化工 （映射文件无效）" in said, said
        assert "苏州电梯" not in said  # it loaded


def test_a_test_message_reaches_every_channel_turned_on(mailbox, robot) -> None:
    """What docs/airflow.md says to run after setting the variables and connections up."""
    from etl.orchestration import alerts

    assert alerts.send_test() == ["e-mail to ops@example.cn, safety@example.cn (connection smtp_default)",
                                  "robot (connection test_robot)"]
    assert mailbox[0]["Subject"] == "【双重预防数据归集】测试消息"
    assert robot[0][1]["text"]["content"].startswith("【双重预防数据归集】测试消息")


def test_a_wecom_robot_gets_at_most_its_2048_bytes(robot, monkeypatch: pytest.MonkeyPatch) -> None:
    from etl.orchestration import alerts

    assert alerts.fit("隐患" * 2000, alerts.WECOM_BYTES).encode("utf-8").__len__() <= 2048
    alerts.post("test_robot", "隐患" * 5000)  # a DingTalk-like URL: up to 18,000 bytes
    content = robot[0][1]["text"]["content"]
    assert content.endswith("…") and len(content.encode("utf-8")) <= alerts.ROBOT_BYTES
