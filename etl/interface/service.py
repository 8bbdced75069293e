"""The receiving side of the interface route (5.2.2, Appendix B) as an ASGI application:
`create_app(engine, settings)` for FastAPI, `serve(...)` to run it under uvicorn (`etl serve`).

Two resources at the paths of Appendix B: the token (B.2, `GET|POST /jsdspcloud/servlet/token`)
and the data (B.3, `POST /jsdspcloud/servlet/syndata`). Every answer, errors included, is the
standard's `{"rescode": "1"|"0", "msg": ..., "data": ...}` in UTF-8 (5.2.2.2), its `msg` Chinese
first. A message is bounded before it costs anything: its body's size while it is read (a
declared Content-Length over the bound is refused unread), the time its body may take, the
records it carries and how many a unit sends a minute; then the token names the unit, and only
that orgNo and the B.3 keys reach `etl.interface.receive.receive`, in a worker thread. Nothing in
a request names a file, a table or a query: the unit is the token's.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from etl.common import settings as config
from etl.common.errors import ConfigError
from etl.interface import apps

log = logging.getLogger("etl.interface")

PREFIX = "/jsdspcloud/servlet"
TOKEN_PATH, SYNDATA_PATH = f"{PREFIX}/token", f"{PREFIX}/syndata"
B3_KEYS = ("batchNo", "txcode", "busType", "data")
TOKEN_BODY_BYTES = 4096  # a token request's form: an Appid and a secret
HEAD_BYTES = 16384       # a request line and headers: a longer head is refused unbuffered
SCRYPT_AT_ONCE = 4       # token checks in parallel: each holds ~16 MiB and a core for a moment


@dataclass(frozen=True)
class ServeSettings:
    """The service's bounds (`ETL_SERVE_*`, docs/airflow.md)."""

    token_seconds: int = 7200
    max_body_bytes: int = 16 * 1024 * 1024
    max_records: int = 1000
    messages_per_minute: int = 60
    timeout_seconds: float = 120.0

    @classmethod
    def from_environment(cls) -> ServeSettings:
        return cls(token_seconds=config.integer("ETL_SERVE_TOKEN_SECONDS") or cls.token_seconds,
                   max_body_bytes=config.integer("ETL_SERVE_MAX_BODY_BYTES") or cls.max_body_bytes,
                   max_records=config.integer("ETL_SERVE_MAX_RECORDS") or cls.max_records,
                   messages_per_minute=(config.integer("ETL_SERVE_MESSAGES_PER_MINUTE")
                                        or cls.messages_per_minute),
                   timeout_seconds=config.number("ETL_SERVE_TIMEOUT_SECONDS", 1) or cls.timeout_seconds)


class Refused(Exception):
    """A request answered with the standard's failure shape and an HTTP status."""

    def __init__(self, status: int, msg: str, headers: dict[str, str] | None = None):
        super().__init__(msg)
        self.status, self.msg, self.headers = status, msg, headers or {}


class PerMinute:
    """A sliding one-minute window per key (a unit's orgNo). One event loop calls it: no lock."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic):
        self.limit, self.clock = limit, clock
        self.seen: dict[str, deque[float]] = {}

    def wait(self, key: str) -> int:
        """0 and counted when `key` may go on; else the seconds until it may."""
        now = self.clock()
        times = self.seen.setdefault(key, deque())
        while times and times[0] <= now - 60:
            times.popleft()
        if len(times) >= self.limit:
            return max(1, math.ceil(times[0] + 60 - now))
        times.append(now)
        return 0


# --- reading a request ------------------------------------------------------------------------


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, refused (413) past `limit` bytes as soon as it is known: by its Content-Length
    before a byte is read, else while it streams in; refused (408) when it takes longer than
    `timeout_s`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise Refused(400, "Content-Length 无效（invalid Content-Length）")
        if int(declared) > limit:
            raise Refused(413, _too_large(limit))
    chunks, size = [], 0
    try:
        with anyio.fail_after(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Refused(413, _too_large(limit))
                chunks.append(chunk)
    except ClientDisconnect:
        raise Refused(400, "请求体未传完连接即断开（the client went away mid-body）") from None
    except TimeoutError:
        raise Refused(408, f"请求体在 {timeout_s:g} 秒内未传完，请重发（the body took longer than "
                           f"{timeout_s:g} s）") from None
    return b"".join(chunks)


def _too_large(limit: int) -> str:
    return (f"请求体超过 {limit} 字节上限，请分批发送（the body exceeds {limit} bytes: send fewer "
            f"records per message）")


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object (UTF-8, a BOM tolerated); 400 for anything else."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Refused(400, "请求体不是 UTF-8 编码的 JSON（the body is not UTF-8）") from None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise Refused(400, "请求体不是合法的 JSON（the body is not valid JSON）") from None
    if not isinstance(value, dict):
        raise Refused(400, "请求体应为 JSON 对象：{access_token, batchNo, txcode, busType, data}"
                           "（the body must be a JSON object）")
    return value


_TYPES = {"batchNo": (str, "字符串 string"), "txcode": (str, "字符串 string"),
          "busType": (str, "字符串 string"), "data": (list, "记录数组 array of records")}


def shape_problems(message: dict[str, Any]) -> list[str]:
    """The B.3 keys missing or of the wrong JSON type; their values are receive's to judge."""
    out = []
    for key, (kind, said) in _TYPES.items():
        if key not in message:
            out.append(f"缺少 {key}（{key} missing）")
        elif not isinstance(message[key], kind):
            out.append(f"{key} 应为{said}")
    return out


# --- the application --------------------------------------------------------------------------


class Answer(JSONResponse):
    """The standard's answer (B.3.4): JSON in UTF-8, saying so."""

    media_type = "application/json; charset=utf-8"


def answer(status: int, msg: str, data: Any = None, rescode: str = "0",
           headers: dict[str, str] | None = None) -> Answer:
    return Answer({"rescode": rescode, "msg": msg, "data": data}, status_code=status,
                  headers={"Cache-Control": "no-store", **(headers or {})})


class Standard(BaseModel):
    rescode: str = Field(description="“1” 成功，“0” 失败（B.3.5）", examples=["1"])
    msg: str = Field(description="调用接口返回原因（B.3.5）；失败时说明如何改正", examples=["success"])
    data: Any = Field(None, description="返回的数据（B.3.5）")


class TokenData(BaseModel):
    access_token: str = Field(description="访问令牌（B.2），调用 syndata 时放在请求体中")
    expires_in: int = Field(description="有效期，秒", examples=[7200])


class TokenAnswer(Standard):
    data: TokenData | None = None


class SyndataMessage(BaseModel):
    access_token: str = Field(description="访问令牌（B.2 获取）")
    batchNo: str = Field(description="批次号：数据日期 + 8 位序号，如 2024010100000001（A.2）",
                         examples=["2024010100000001"])
    txcode: str = Field(description="数据信息类别 01–09（A.2 txCode）", examples=["09"])
    busType: str = Field(description="数据操作标识：I 新增，U 更新，D 删除（A.2）", examples=["I"])
    data: list[dict[str, Any]] = Field(description="记录数组（A.3–A.11 的结构）")


_REFUSALS = {400: "请求体不是合法的 JSON 对象", 401: "appid/secret 或 access_token 无效、已过期或已撤销",
             408: "请求体传输超时", 413: "请求体或记录数超过上限", 422: "字段缺失或类型错误",
             429: "该单位每分钟消息数超过上限", 503: "处理超时或服务暂不可用"}
_HTTP_SAID = {404: "没有这个资源：令牌为 GET /jsdspcloud/servlet/token，数据为 POST "
                   "/jsdspcloud/servlet/syndata（no such resource）",
              405: "不支持该请求方法（method not allowed）"}


def _failures(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": Standard, "description": _REFUSALS[c]} for c in codes}


async def _on_refused(_: Request, e: Exception) -> Answer:
    assert isinstance(e, Refused)
    return answer(e.status, e.msg, headers=e.headers)


async def _on_unauthorized(_: Request, e: Exception) -> Answer:
    return answer(401, str(e))


async def _on_invalid(_: Request, e: Exception) -> Answer:
    assert isinstance(e, RequestValidationError)
    fields = ", ".join(sorted({".".join(str(p) for p in err.get("loc", ())[1:]) or "?"
                               for err in e.errors()}))
    return answer(422, f"缺少参数或类型错误：{fields}（missing or wrong: {fields}）")


async def _on_http(_: Request, e: Exception) -> Answer:
    assert isinstance(e, HTTPException)
    return answer(e.status_code, _HTTP_SAID.get(e.status_code, f"请求被拒绝（HTTP {e.status_code}）"),
                  headers=dict(e.headers or {}))


async def _on_failure(_: Request, e: Exception) -> Answer:
    log.error("the service failed: %s: %s", type(e).__name__, e)
    return answer(500, "服务内部错误，消息未入库，请稍后以相同 batchNo 重发（internal error: send the "
                       "message again later）")


async def _access_log(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
    started, status = time.perf_counter(), 500
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:  # the path, never the query string: a token request's holds the secret
        log.info("%s %s %s %d orgNo=%s %.0f ms", request.client.host if request.client else "-",
                 request.method, request.url.path, status, getattr(request.state, "org_no", "-"),
                 (time.perf_counter() - started) * 1000)


def _pool_capacity(engine: Engine) -> int:
    """Connections the engine's pool may open at once: database work waits for one of these
    rather than for the pool's timeout."""
    pool = engine.pool
    size = pool.size() if hasattr(pool, "size") else 5
    return max(1, size + max(0, getattr(pool, "_max_overflow", 0)))


class Service:
    """What the two resources do, on one target, within `settings`' bounds."""

    def __init__(self, engine: Engine, settings: ServeSettings):
        self.engine, self.settings = engine, settings
        self.db = anyio.CapacityLimiter(_pool_capacity(engine))
        self.scrypt = anyio.CapacityLimiter(SCRYPT_AT_ONCE)
        self.per_unit = PerMinute(settings.messages_per_minute)

    async def token(self, appid: str, secret: str) -> Answer:
        issued = await anyio.to_thread.run_sync(apps.issue_token, self.engine, appid, secret,
                                                self.settings.token_seconds, limiter=self.scrypt)
        return answer(200, "success", {"access_token": issued.token, "expires_in": issued.expires_in},
                      rescode="1")

    async def token_form(self, request: Request) -> Answer:
        body = await read_body(request, TOKEN_BODY_BYTES, self.settings.timeout_seconds)
        fields = {**parse_qs(body.decode("utf-8", "replace"), max_num_fields=10),
                  **{k: [v] for k, v in request.query_params.items()}}
        appid, secret = (fields.get(k, [""])[0] for k in ("appid", "secret"))
        if not appid or not secret:
            raise Refused(422, "缺少参数 appid 或 secret（appid and secret are required）")
        return await self.token(appid, secret)

    async def admit(self, request: Request) -> tuple[str, dict[str, Any]]:
        """The unit and its B.3 message, once every bound is met; `Refused` otherwise."""
        s = self.settings
        message = parse_object(await read_body(request, s.max_body_bytes, s.timeout_seconds))
        token = message.get("access_token")
        if not isinstance(token, str) or not token:
            raise Refused(401, "缺少 access_token：请先从 /jsdspcloud/servlet/token 获取（access_token "
                               "missing）")
        org_no = await anyio.to_thread.run_sync(apps.authenticate, self.engine, token, limiter=self.db)
        request.state.org_no = org_no
        wait = self.per_unit.wait(org_no)
        if wait:
            raise Refused(429, f"该单位每分钟至多 {s.messages_per_minute} 条消息，请 {wait} 秒后重发"
                               f"（too many messages: retry in {wait} s）", {"Retry-After": str(wait)})
        problems = shape_problems(message)
        if problems:
            raise Refused(422, "；".join(problems))
        if len(message["data"]) > s.max_records:
            raise Refused(413, f"每条消息至多 {s.max_records} 条记录，本条 {len(message['data'])} 条，"
                               f"请分批发送（at most {s.max_records} records per message）")
        return org_no, {k: message[k] for k in B3_KEYS}

    async def syndata(self, request: Request) -> Answer:
        org_no, message = await self.admit(request)
        from etl.interface.receive import receive  # written beside this module (issue 27)

        timeout = self.settings.timeout_seconds
        try:
            with anyio.fail_after(timeout):
                result = await anyio.to_thread.run_sync(receive, self.engine, org_no, message,
                                                        limiter=self.db, abandon_on_cancel=True)
        except TimeoutError:
            raise Refused(503, f"处理超过 {timeout:g} 秒，消息可能仍会入库：请稍后以相同 batchNo 重发，"
                               f"重复的消息不会重复入库（timed out: resend with the same batchNo）") from None
        return answer(200, str(result.get("msg", "")), jsonable_encoder(result.get("data")),
                      rescode=str(result.get("rescode", "0")))


_TOKEN_DOC = ("获取访问令牌（B.2）：appid 和 secret 为归集单位分配的 Appid 与 AppSecret。令牌在 "
              "expires_in 秒后过期，凭证轮换或撤销时立即失效。")
_FORM = {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "required": ["appid", "secret"],
    "properties": {"appid": {"type": "string"}, "secret": {"type": "string"}}}}}


def create_app(engine: Engine, settings: ServeSettings) -> FastAPI:
    """The FastAPI application answering B.2 and B.3 for the target `engine`."""
    app = FastAPI(
        title="特种设备双重预防数据接口归集（DB32 5.2.2，附录 B）",
        description="使用单位以 HTTPS 推送双重预防数据：先用归集单位分配的 Appid 和 AppSecret 获取 "
                    "access_token（B.2），再以 JSON POST 数据（B.3）。每个应答都是 "
                    "`{\"rescode\": \"1\"|\"0\", \"msg\": …, \"data\": …}`，UTF-8。"
                    "\n\nUnits push their dual-prevention records over HTTPS: get a token with "
                    "the Appid and AppSecret the collecting organisation gave them, then POST JSON.",
        version="1.0", docs_url="/docs", redoc_url=None, openapi_url="/openapi.json",
        default_response_class=Answer)
    for kind, handler in ((Refused, _on_refused), (apps.Unauthorized, _on_unauthorized),
                          (RequestValidationError, _on_invalid), (HTTPException, _on_http),
                          (Exception, _on_failure)):
        app.add_exception_handler(kind, handler)
    app.middleware("http")(_access_log)
    service = Service(engine, settings)

    @app.get(TOKEN_PATH, summary="获取 access_token（B.2）", response_model=TokenAnswer,
             description=f"{_TOKEN_DOC}（本服务：{settings.token_seconds} 秒）",
             responses=_failures(401, 422))
    async def token(appid: str = Query(description="归集单位分配的唯一凭证 Appid（B.1）", max_length=64),
                    secret: str = Query(description="密钥 AppSecret（B.1）", max_length=256)) -> Answer:
        return await service.token(appid, secret)

    @app.post(TOKEN_PATH, summary="获取 access_token（B.2，表单）", response_model=TokenAnswer,
              description=f"{_TOKEN_DOC} 也可 POST application/x-www-form-urlencoded 表单 "
                          f"appid=…&secret=…，以免密钥出现在地址中。",
              responses=_failures(401, 413, 422), openapi_extra={"requestBody": {"content": _FORM}})
    async def token_form(request: Request) -> Answer:
        return await service.token_form(request)

    @app.post(SYNDATA_PATH, summary="推送数据（B.3）", response_model=Standard,
              description="以 JSON 推送一批记录（B.3.3）。记录须为 A.3–A.11 的结构，且只能属于令牌对应的"
                          "单位（orgNo）；被拒绝的记录及原因在应答的 msg 与 data 中。相同（单位、txcode、"
                          "batchNo）的消息重复发送时应答相同，不会重复入库。"
                          f"\n\n上限：请求体 {settings.max_body_bytes} 字节，每条消息 "
                          f"{settings.max_records} 条记录，每单位每分钟 {settings.messages_per_minute} "
                          f"条消息。",
              responses=_failures(400, 401, 408, 413, 422, 429, 503),
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": SyndataMessage.model_json_schema()}}}})
    async def syndata(request: Request) -> Answer:
        return await service.syndata(request)

    return app


# --- running it -------------------------------------------------------------------------------


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}: choose another "
                          f"--host/--port") from None
    return sock


def _check_certificate(certfile: str, keyfile: str) -> None:
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"--certfile {certfile} / --keyfile {keyfile}: cannot be loaded "
                          f"({getattr(e, 'strerror', None) or e}): give a PEM certificate (chain) "
                          f"and its unencrypted private key") from None


def _tls12(_: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    context = default()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def serve(engine: Engine, settings: ServeSettings, *, host: str = "127.0.0.1", port: int = 8443,
          certfile: str | None = None, keyfile: str | None = None, behind_proxy: bool = False,
          say: Callable[[str], None] = print) -> None:
    """Run the service until stopped. HTTPS with `certfile` and `keyfile`; plain HTTP only
    `behind_proxy` (a TLS-terminating proxy in front, whose X-Forwarded-For is then believed
    from loopback)."""
    import uvicorn

    if bool(certfile) != bool(keyfile):
        raise ConfigError("--certfile and --keyfile go together: give both")
    if not certfile and not behind_proxy:
        raise ConfigError("refusing to serve plain HTTP: the standard asks for HTTPS (5.2.2.1); give "
                          "--certfile and --keyfile, or --behind-proxy when a TLS-terminating proxy "
                          "is in front")
    if certfile and keyfile:
        _check_certificate(certfile, keyfile)
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    uv = uvicorn.Config(create_app(engine, settings), access_log=False, log_config=None,
                        server_header=False, proxy_headers=behind_proxy, ssl_certfile=certfile,
                        ssl_keyfile=keyfile, ssl_context_factory=_tls12 if certfile else None,
                        timeout_keep_alive=5, lifespan="off",
                        # h11, not httptools: h11 bounds what it buffers of a request's head
                        http="h11", h11_max_incomplete_event_size=HEAD_BYTES)
    scheme = "https" if certfile else "http"
    if not certfile:
        say(f"warning: serving plain HTTP on {host}:{bound} (--behind-proxy): only a TLS-terminating "
            f"proxy in front may reach it; units must use https")
    shown = f"[{host}]" if ":" in host else host
    say(f"serving {scheme}://{shown}:{bound}{PREFIX}/token and {PREFIX}/syndata (OpenAPI: /docs); "
        f"Ctrl-C stops")
    try:
        uvicorn.Server(uv).run(sockets=[sock])
    finally:
        sock.close()
