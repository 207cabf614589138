"""The local API Gateway and function URL: a thin HTTP-to-event adapter in front of the very handlers of
functions/*/app.py.

Each HTTP request on 127.0.0.1 whose path is a route of the REST API (template.yaml's `Type: Api` events: the
API function's) becomes an API Gateway REST (v1) proxy event (resource, path, httpMethod, headers,
multiValueHeaders, queryStringParameters, multiValueQueryStringParameters, pathParameters, requestContext with
identity.sourceIp, requestId and stage, body as text, isBase64Encoded: true only for the API's
BinaryMediaTypes, of which template.yaml declares none) and is handed to that route's handler. The handler's
answer (statusCode, headers, multiValueHeaders, body, isBase64Encoded) becomes the HTTP response, as API
Gateway does it; a handler that raises or answers something that is not a proxy response gives API Gateway's
502.

Any other path goes to the function the template gives a Lambda function URL (`FunctionUrlConfig`: the
webhook function, whose URL Meta calls at /webhook), as a function URL event (payload format 2.0: rawPath,
rawQueryString, lower-cased headers with repeated values joined by commas, cookies, queryStringParameters,
requestContext.http, body, isBase64Encoded: false for text, JSON, XML and JavaScript bodies). A function URL
passes every path and method to its function, which answers those it does not know itself. Deployed, the URL
is a host of its own; here it shares the API's port, so that `{gateway}/webhook` is the webhook, as
`https://<url-id>.lambda-url.<region>.on.aws/webhook` is deployed. Its answer (statusCode, headers, cookies,
body, isBase64Encoded; or any other JSON, which a function URL answers as a 200 application/json body)
becomes the HTTP response.

The handlers run in this process, imported by file path under module names of their own (two files are
both called app.py), one call at a time: Powertools' resolvers keep the current event on a class that all
resolvers in a process share, so this process is one Lambda execution environment (see _Pool).

Besides the template's routes, `/_local/...` serves the local tools:
  GET /_local/invocations   live Lambda invocations of the stack's runtime (function, pid, started_at, deadline)
  GET /_local/dashboard     the dashboard page (local/dashboard.py), GET /_local/metrics its JSON feed

Python:  `Gateway(runtime=stack.runtime, port=3000).start()` (LocalStack(with_gateway=True) does it)
"""

from __future__ import annotations

import base64
import errno
import importlib.util
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from local import template as sam
from local.lambda_process import LambdaContext
from local.loopback import KeepAliveHandler, LoopbackServer

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
LAYER_PATH = REPO_ROOT / "layers" / "common" / "python"
DEFAULT_PORT = 3000
ACCOUNT_ID = "000000000000"
API_ID = "local"
# API Gateway refuses larger request payloads before any function sees them.
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
# A function URL's (a synchronous invocation's) request payload limit.
FUNCTION_URL_MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
# The bodies a function URL passes as text; any other content type arrives base64-encoded.
_TEXT_MEDIA_TYPES = ("text/*", "application/json", "application/*+json", "application/xml", "application/*+xml",
                     "application/javascript")
# Headers that belong to this hop, not to the answer the function gave.
_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive"}


class GatewayError(RuntimeError):
    """The gateway cannot start (port in use, no such handler); the message is one line for people."""


# -- routes ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One `Type: Api` event of a function: METHOD + resource path (`/campaigns/{id}`)."""

    method: str
    resource: str
    function: str
    pattern: re.Pattern
    literal_segments: int

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path)
        return None if found is None else {k: unquote(v) for k, v in found.groupdict().items()}


def route(method: str, resource: str, function: str) -> Route:
    parts, names, literal = [], [], 0
    for segment in resource.strip("/").split("/") if resource != "/" else []:
        if segment.startswith("{") and segment.endswith("+}"):
            name = segment[1:-2]
            parts.append(f"(?P<{name}>.+)")
        elif segment.startswith("{") and segment.endswith("}"):
            name = segment[1:-1]
            parts.append(f"(?P<{name}>[^/]+)")
        else:
            parts.append(re.escape(segment))
            literal += 1
            continue
        names.append(name)
    pattern = re.compile("/" + "/".join(parts) + "/?")
    return Route(method.upper(), resource, function, pattern, literal)


def routes_from_template(template: dict, names: dict[str, str]) -> list[Route]:
    """The API routes of the template's functions listed in `names` (logical id → local name)."""
    found = []
    for logical_id, resource in sam.resources_of_type(template, "AWS::Serverless::Function").items():
        if logical_id not in names:
            continue
        for event in ((resource.get("Properties") or {}).get("Events") or {}).values():
            if event.get("Type") != "Api":
                continue
            properties = event.get("Properties") or {}
            found.append(route(str(properties["Method"]), str(properties["Path"]), names[logical_id]))
    # API Gateway prefers the most specific resource: literal segments before path parameters.
    return sorted(found, key=lambda r: -r.literal_segments)


def url_functions_from_template(template: dict, names: dict[str, str]) -> tuple[str, ...]:
    """The local names of the functions in `names` that the template gives a function URL."""
    return tuple(names[logical_id] for logical_id in sam.function_urls(template) if logical_id in names)


def stage_from_template(template: dict) -> str:
    stage = ((template.get("Parameters") or {}).get("Stage") or {}).get("Default")
    return str(stage) if stage else "local"


# -- handlers in this process -------------------------------------------------------------------------


@dataclass
class Handler:
    """A function as the gateway calls it: its handler file, attribute and timeout."""

    name: str
    path: Path
    attr: str = "lambda_handler"
    timeout_seconds: float = 30.0
    memory_mb: int = 128


def handlers_from_template(template: dict, names: dict[str, str]) -> dict[str, Handler]:
    specs = sam.functions(template)
    return {
        name: Handler(name, REPO_ROOT / specs[logical_id].handler_path, specs[logical_id].handler_attr,
                      float(specs[logical_id].timeout_seconds), int(specs[logical_id].memory_mb))
        for logical_id, name in names.items()
        if logical_id in specs
    }


class _Environment:
    """One instance of a handler's module: serves one request at a time."""

    _loaded = 0
    _load_lock = threading.Lock()

    def __init__(self, handler: Handler):
        with self._load_lock:
            _Environment._loaded += 1
            # Unique per instance: two functions' app.py, and several instances of one, never share a module.
            name = "_gateway_" + re.sub(r"\W", "_", handler.name) + f"_{_Environment._loaded}"
            if str(LAYER_PATH) not in sys.path:
                sys.path.insert(0, str(LAYER_PATH))
            spec = importlib.util.spec_from_file_location(name, handler.path)
            if spec is None or spec.loader is None:
                raise GatewayError(f"cannot import {handler.path}")
            module: ModuleType = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
        self.module_name = name
        self.module = module
        self.call: Callable[[dict, Any], Any] = getattr(module, handler.attr)

    def after_invocation(self) -> None:
        """With POWERTOOLS_METRICS_DISABLED, Powertools never flushes the metrics it collects and prints
        them to stdout every 100 values; locally nobody reads them, so they are dropped after each call."""
        metrics = getattr(self.module, "metrics", None)
        if metrics is not None and _metrics_disabled() and hasattr(metrics, "clear_metrics"):
            metrics.clear_metrics()


def _metrics_disabled() -> bool:
    return os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() in ("1", "true")


class _Pool:
    """A function's warm environment, created on first use.

    Powertools' resolvers keep the current event on the BaseRouter *class*, shared by every resolver
    in the process (the API's and the webhook's alike), so two handlers running at once here would read
    each other's events. Lambda never runs two events in one environment at a time; this process is
    one environment for both functions, so one lock (`_INVOKE_LOCK`) runs one handler call at a time.
    """

    def __init__(self, handler: Handler):
        self.handler = handler
        self._environment: _Environment | None = None

    def invoke(self, event: dict) -> Any:
        with _INVOKE_LOCK:
            if self._environment is None:
                self._environment = _Environment(self.handler)
            environment = self._environment
            now = time.time()
            context = LambdaContext(
                aws_request_id=str(uuid.uuid4()),
                function_name=self.handler.name,
                function_version="$LATEST",
                invoked_function_arn=f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:{self.handler.name}",
                memory_limit_in_mb=str(self.handler.memory_mb),
                log_group_name=f"/aws/lambda/{self.handler.name}",
                log_stream_name=f"local/{environment.module_name}",
                deadline_ms=int((now + self.handler.timeout_seconds) * 1000),
            )
            try:
                return environment.call(event, context)
            finally:
                environment.after_invocation()

    @property
    def environments(self) -> int:
        return int(self._environment is not None)


_INVOKE_LOCK = threading.Lock()


# -- events and answers ---------------------------------------------------------------------------------


@dataclass
class HttpRequest:
    method: str
    target: str  # path and query as sent
    headers: list[tuple[str, str]]
    body: bytes
    source_ip: str = "127.0.0.1"
    host: str = "127.0.0.1"


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def proxy_event(request: HttpRequest, matched: Route | None, path_parameters: dict | None, stage: str,
                request_id: str, binary_media_types: tuple[str, ...] = ()) -> dict:
    """The API Gateway REST (v1) proxy event for one HTTP request."""
    parts = urlsplit(request.target)
    path = parts.path or "/"
    headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for name, value in request.headers:
        # API Gateway keeps the first spelling of a name, the last value in `headers`, all in multiValueHeaders.
        key = next((k for k in multi_headers if k.lower() == name.lower()), name)
        multi_headers.setdefault(key, []).append(value)
        headers[key] = value
    for name, value in (("X-Forwarded-For", request.source_ip), ("X-Forwarded-Proto", "http"),
                        ("X-Forwarded-Port", request.host.rpartition(":")[2] or "80")):
        if not any(k.lower() == name.lower() for k in headers):
            headers[name] = value
            multi_headers[name] = [value]
    query: dict[str, str] = {}
    multi_query: dict[str, list[str]] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        query[name] = value
        multi_query.setdefault(name, []).append(value)
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    body, encoded = _event_body(request.body, content_type, binary_media_types)
    now = datetime.now(UTC)
    resource = matched.resource if matched else path
    user_agent = next((v for k, v in headers.items() if k.lower() == "user-agent"), None)
    return {
        "resource": resource,
        "path": path,
        "httpMethod": request.method,
        "headers": headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": path_parameters or None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "local",
            "resourcePath": resource,
            "httpMethod": request.method,
            "extendedRequestId": request_id,
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "path": f"/{stage}{path}",
            "accountId": ACCOUNT_ID,
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": request.host.split(":")[0],
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "requestId": request_id,
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "sourceIp": request.source_ip,
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": user_agent,
                "user": None,
            },
            "domainName": request.host,
            "apiId": API_ID,
        },
        "body": body,
        "isBase64Encoded": encoded,
    }


def function_url_event(request: HttpRequest, request_id: str) -> dict:
    """The Lambda function URL event (payload format 2.0) for one HTTP request."""
    parts = urlsplit(request.target)
    path = parts.path or "/"
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in request.headers:
        key = name.lower()
        if key == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
            continue
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    for name, value in (("x-forwarded-for", request.source_ip), ("x-forwarded-proto", "http"),
                        ("x-forwarded-port", request.host.rpartition(":")[2] or "80")):
        headers.setdefault(name, value)
    query: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value
    now = datetime.now(UTC)
    domain = request.host.split(":")[0]
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": parts.query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",  # AuthType NONE: no caller identity
            "apiId": API_ID,
            "domainName": request.host,
            "domainPrefix": domain,
            "http": {"method": request.method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": request.source_ip, "userAgent": headers.get("user-agent", "")},
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if request.body:
        text = _media_type_in(headers.get("content-type", ""), _TEXT_MEDIA_TYPES)
        event["body"] = request.body.decode("utf-8", errors="replace") if text else base64.b64encode(
            request.body).decode()
        event["isBase64Encoded"] = not text
    return event


def _event_body(raw: bytes, content_type: str, binary_media_types: tuple[str, ...]) -> tuple[str | None, bool]:
    """As API Gateway passes a body: base64 for the API's binary media types, else text (UTF-8; bytes that
    are not UTF-8 become U+FFFD, as API Gateway's conversion to a string does)."""
    if not raw:
        return None, False
    if _media_type_in(content_type, binary_media_types):
        return base64.b64encode(raw).decode(), True
    return raw.decode("utf-8", errors="replace"), False


def _media_type_in(content_type: str, patterns: tuple[str, ...]) -> bool:
    """Whether a Content-Type is one of `patterns` (`type/sub`, `type/*`, `*/*`, `type/*+suffix`)."""
    media = content_type.split(";")[0].strip().lower()
    for pattern in patterns:
        kind, _, sub = pattern.lower().partition("/")
        m_kind, _, m_sub = media.partition("/")
        if kind in ("*", m_kind) and (sub in ("*", m_sub) or (sub.startswith("*+") and m_sub.endswith(sub[1:]))):
            return True
    return False


def binary_media_types_from_template(template: dict) -> tuple[str, ...]:
    """BinaryMediaTypes of the template's AWS::Serverless::Api (`~1` is how they spell `/`)."""
    found: list[str] = []
    for api in sam.resources_of_type(template, "AWS::Serverless::Api").values():
        found += [str(t).replace("~1", "/") for t in (api.get("Properties") or {}).get("BinaryMediaTypes") or []]
    return tuple(found)


def response_from(result: Any, request_id: str) -> HttpResponse:
    """A Lambda proxy answer → HTTP; anything else is API Gateway's 502 (malformed proxy response)."""
    if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int | str):
        raise ValueError(f"malformed Lambda proxy response: {str(result)[:200]}")
    status = int(result["statusCode"])
    if not 100 <= status <= 599:
        raise ValueError(f"malformed Lambda proxy response: statusCode {status}")
    headers: list[tuple[str, str]] = []
    single = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    for name, values in multi.items():
        for value in values or []:
            headers.append((str(name), str(value)))
    for name, value in single.items():
        if not any(n.lower() == str(name).lower() for n in multi):
            headers.append((str(name), str(value)))
    headers = [(n, v) for n, v in headers if n.lower() not in _HOP_HEADERS]
    raw = result.get("body")
    if raw is None:
        body = b""
    elif result.get("isBase64Encoded"):
        body = base64.b64decode(raw)
    else:
        body = str(raw).encode("utf-8")
    if not any(n.lower() == "content-type" for n, _ in headers):
        headers.append(("Content-Type", "application/json"))
    headers.append(("x-amzn-RequestId", request_id))
    return HttpResponse(status, headers, body)


def function_url_response_from(result: Any, request_id: str) -> HttpResponse:
    """A function's answer through its URL → HTTP. With a statusCode, as given (each of `cookies` a
    Set-Cookie header); any other JSON value is the body of a 200 application/json answer, as a function
    URL infers it."""
    if not (isinstance(result, dict) and "statusCode" in result):
        result = {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(result)}
    response = response_from({k: v for k, v in result.items() if k != "multiValueHeaders"}, request_id)
    # Before x-amzn-RequestId, which response_from puts last.
    response.headers[-1:-1] = [("Set-Cookie", str(cookie)) for cookie in result.get("cookies") or []]
    return response


def json_response(status: int, value: Any, extra: list[tuple[str, str]] | None = None) -> HttpResponse:
    body = json.dumps(value, default=str).encode()
    return HttpResponse(status, [("Content-Type", "application/json"), *(extra or [])], body)


def error_response(status: int, code: str, message: str, field: str | None = None) -> HttpResponse:
    return json_response(status, {"error": {"code": code, "message": message, "field": field}})


# -- the gateway -------------------------------------------------------------------------------------------


class Gateway:
    """The HTTP server and its dispatch. `runtime` (a LambdaRuntime) backs /_local/invocations and the
    dashboard's view of sender processes; `dashboard=False` leaves the dashboard routes out."""

    def __init__(
        self,
        runtime=None,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        template: dict | None = None,
        names: dict[str, str] | None = None,
        handlers: dict[str, Handler] | None = None,
        routes: list[Route] | None = None,
        url_functions: tuple[str, ...] = (),
        stage: str | None = None,
        binary_media_types: tuple[str, ...] = (),
        dashboard: bool = True,
        dashboard_interval: float = 1.0,
        access_log: bool = False,
    ):
        if host not in ("127.0.0.1", "localhost"):
            raise GatewayError(f"the local gateway binds to 127.0.0.1 only, not {host!r}")
        if handlers is None or routes is None:
            from local.stack import FUNCTION_NAMES  # noqa: PLC0415 - stack imports this module too

            template = template if template is not None else sam.load_template()
            names = names or {k: v for k, v in FUNCTION_NAMES.items() if v in ("api", "webhook")}
            handlers = handlers if handlers is not None else handlers_from_template(template, names)
            routes = routes if routes is not None else routes_from_template(template, names)
            url_functions = url_functions or url_functions_from_template(template, names)
            stage = stage or stage_from_template(template)
            binary_media_types = binary_media_types_from_template(template)
        if len(url_functions) > 1:
            raise GatewayError(f"the template gives {len(url_functions)} functions a URL ({', '.join(url_functions)}); "
                               "the local gateway serves one, on the API's port")
        self.runtime = runtime
        self.routes = routes
        # The function whose URL serves every path that is not a route of the API (None: such paths are 404).
        self.url_function = url_functions[0] if url_functions else None
        self.stage = stage or "local"
        self.binary_media_types = tuple(binary_media_types)
        self.access_log = access_log
        self._pools = {name: _Pool(handler) for name, handler in handlers.items()}
        self._address = ("127.0.0.1", port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.dashboard = None
        if dashboard:
            from local.dashboard import Dashboard  # noqa: PLC0415

            self.dashboard = Dashboard(self, interval=dashboard_interval)

    # -- life cycle

    def start(self) -> Gateway:
        if self._server is not None:
            raise RuntimeError("gateway already started")
        try:
            self._server = _Server(self._address, _RequestHandler, self)
        except OSError as error:
            port = self._address[1]
            if error.errno == errno.EADDRINUSE:
                raise GatewayError(
                    f"port {port} on 127.0.0.1 is already in use (is `make up` running?): "
                    "set API_PORT to another port"
                ) from None
            raise GatewayError(f"cannot listen on 127.0.0.1:{port}: {error.strerror}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="gateway", daemon=True)
        self._thread.start()
        if self.dashboard:
            self.dashboard.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        if self.dashboard:
            self.dashboard.stop()
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("gateway not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- dispatch

    def find_route(self, method: str, path: str) -> tuple[Route | None, dict | None, list[str]]:
        """The route for METHOD path, its path parameters, and the methods the path has at all."""
        allowed = []
        for candidate in self.routes:
            parameters = candidate.match(path)
            if parameters is None:
                continue
            if candidate.method in (method, "ANY"):
                return candidate, parameters, []
            allowed.append(candidate.method)
        return None, None, allowed

    def handle(self, request: HttpRequest) -> HttpResponse:
        """One HTTP request → one HTTP response (local routes, or a function through its proxy event)."""
        path = urlsplit(request.target).path or "/"
        if path.startswith("/_local/") or path == "/_local":
            return self._local(request, path)
        request_id = str(uuid.uuid4())
        matched, parameters, allowed = self.find_route(request.method, path)
        if matched is None and not allowed and self.url_function is not None:
            # Not the API's: the function URL's, which takes any path and method.
            if len(request.body) > FUNCTION_URL_MAX_PAYLOAD_BYTES:
                return json_response(413, {"message": "Request Too Long"})
            return self.invoke(self.url_function, function_url_event(request, request_id), request_id)
        if matched is None:
            if allowed:
                response = error_response(405, "method_not_allowed",
                                          f"{request.method} is not a method of {path} in template.yaml", "method")
                response.headers.append(("Allow", ", ".join(sorted(set(allowed)))))
                return response
            return error_response(404, "not_found", f"no route {request.method} {path} in template.yaml "
                                  "(the local dashboard is at /_local/dashboard)", "path")
        if len(request.body) > MAX_PAYLOAD_BYTES:
            return json_response(413, {"message": "Request Too Long"})
        event = proxy_event(request, matched, parameters, self.stage, request_id, self.binary_media_types)
        return self.invoke(matched.function, event, request_id)

    def invoke(self, function: str, event: dict, request_id: str | None = None) -> HttpResponse:
        """Run a function's handler on a proxy event, or a function URL event (version 2.0), and map its
        answer as API Gateway or the function URL does (the dashboard calls the API this way too)."""
        request_id = request_id or event.get("requestContext", {}).get("requestId") or str(uuid.uuid4())
        through_url = event.get("version") == "2.0"
        try:
            result = self._pools[function].invoke(event)
            return (function_url_response_from if through_url else response_from)(result, request_id)
        except Exception:
            # What API Gateway answers when the integration fails; the traceback goes to the log.
            http = event.get("requestContext", {}).get("http", {})
            log.error("%s %s: the %s function failed\n%s", event.get("httpMethod") or http.get("method"),
                      event.get("path") or event.get("rawPath"), function, traceback.format_exc())
            return json_response(502, {"message": "Internal server error"}, [("x-amzn-RequestId", request_id),
                                                                               ("x-amzn-ErrorType",
                                                                                "InternalServerErrorException")])

    def call_api(self, method: str, path: str, query: dict | None = None, body: Any = None) -> tuple[int, Any]:
        """An in-process request through the same route and handler as HTTP (no socket): (status, JSON)."""
        target = path
        if query:
            target += "?" + "&".join(f"{k}={v}" for k, v in query.items())
        raw = json.dumps(body).encode() if body is not None else b""
        headers = [("Content-Type", "application/json")] if body is not None else []
        response = self.handle(HttpRequest(method, target, headers + [("User-Agent", "local-dashboard")], raw))
        try:
            return response.status, json.loads(response.body or b"null")
        except ValueError:
            return response.status, None

    def environments(self) -> dict[str, int]:
        return {name: pool.environments for name, pool in self._pools.items()}

    def _local(self, request: HttpRequest, path: str) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return error_response(405, "method_not_allowed", f"{path} takes GET", "method")
        if path == "/_local/invocations":
            if self.runtime is None:
                return error_response(404, "not_found", "this gateway runs without a Lambda runtime", "path")
            live = [{k: v for k, v in entry.items() if k != "event"} for entry in self.runtime.invocations()]
            return json_response(200, live)
        if self.dashboard is not None:
            if path in ("/_local", "/_local/", "/_local/dashboard"):
                return HttpResponse(200, [("Content-Type", "text/html; charset=utf-8"),
                                          ("Cache-Control", "no-store")], self.dashboard.page().encode())
            if path == "/_local/metrics":
                return json_response(200, self.dashboard.metrics(), [("Cache-Control", "no-store")])
        return error_response(404, "not_found", f"no local route {path}", "path")


# -- HTTP ----------------------------------------------------------------------------------------------------


class _Server(LoopbackServer):
    request_queue_size = 256

    def __init__(self, address, handler, gateway: Gateway):
        self.gateway = gateway
        super().__init__(address, handler)


class _RequestHandler(KeepAliveHandler):
    timeout = 120  # idle keep-alive connections end
    server: _Server

    def _serve(self) -> None:
        started = time.monotonic()
        body = self._read_body()
        if body is None:
            response = json_response(413, {"message": "Request Too Long"})
            self.close_connection = True
        else:
            request = HttpRequest(
                method=self.command,
                target=self.path,
                headers=list(self.headers.items()),
                body=body,
                source_ip=self.client_address[0],
                host=self.headers.get("Host") or f"127.0.0.1:{self.server.server_port}",
            )
            response = self.server.gateway.handle(request)
        self._write(response)
        if self.server.gateway.access_log:
            print(f"{self.command} {self.path} {response.status} {1000 * (time.monotonic() - started):.0f}ms",
                  file=sys.stderr, flush=True)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _serve

    def _read_body(self) -> bytes | None:
        """The request body (Content-Length or chunked); None when it is over API Gateway's limit."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks, size = [], 0
            while True:
                line = self.rfile.readline(65537)
                length = int(line.split(b";")[0].strip() or b"0", 16)
                if length == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                size += length
                if size > MAX_PAYLOAD_BYTES:
                    return None
                chunks.append(self.rfile.read(length))
                self.rfile.readline(3)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_PAYLOAD_BYTES:
            return None
        return self.rfile.read(length) if length else b""

    def _write(self, response: HttpResponse) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)
