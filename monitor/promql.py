"""Signals read by PromQL from any Prometheus-compatible server (Prometheus, Thanos, Mimir,
VictoriaMetrics): bounded, retried range queries, stitched onto one time grid.

Missing data is never taken for good data: Thanos is asked not to answer partially, and an
answer flagged as partial is an error, as is any value Prometheus would not have written.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import requests
from requests.auth import AuthBase
from requests.structures import CaseInsensitiveDict

from baselines.frame import SignalFrame, measured
from monitor.clock import Clock, WallClock
from monitor.deadlines import Interrupter, interruptible
from monitor.errors import ConfigError, ScrapeError
from monitor.fetch import TransientScrapeError, bounded_request
from monitor.policy import PromSource, SignalRule
from monitor.redact import printable, redact_url

API_PATH = "/api/v1/query_range"
NAMES_PATH = "/api/v1/label/__name__/values"
MAX_POINTS_PER_REQUEST = 11_000  # Prometheus refuses more points per series in one request
MAX_REQUESTS_PER_QUERY = 16  # beyond this many requests the step is enlarged instead
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
POST_ABOVE_BYTES = 2_000  # proxies cap URL length; longer queries go in a form body
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
_ERROR_TEXT_LIMIT = 500

_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_VALUE = rf"(?:{_NUMBER}|NaN|[+-]Inf)"
_VALUES = re.compile(rf"{_VALUE}(?:\n{_VALUE})*")  # joined by newlines: one C-level match
_PLACEHOLDER = re.compile(r"\$(version|service|step)\b")
# Prometheus's own query annotations; every other warning means data was left out.
_HARMLESS_WARNING = re.compile(r"^PromQL (info|warning):")


@dataclass(frozen=True)
class RangeSeries:
    """One series of a range query: its labels and samples (times in seconds, sorted)."""

    labels: Mapping[str, str]
    times: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class RangePlan:
    """The evaluation times of a range query, in whole milliseconds as Prometheus counts them."""

    start_ms: int
    step_ms: int
    points: int

    @property
    def step(self) -> float:
        return self.step_ms / 1000.0

    def times(self) -> np.ndarray:
        """The grid: start, start + step, ... in seconds."""
        return (self.start_ms + self.step_ms * np.arange(self.points, dtype=np.int64)) / 1000.0

    def chunks(self) -> list[tuple[int, int]]:
        """Consecutive (start_ms, end_ms) requests of at most MAX_POINTS_PER_REQUEST points."""
        return [
            (self.start_ms + first * self.step_ms,
             self.start_ms + (min(first + MAX_POINTS_PER_REQUEST, self.points) - 1) * self.step_ms)
            for first in range(0, self.points, MAX_POINTS_PER_REQUEST)
        ]

    def slots(self, times: np.ndarray) -> np.ndarray:
        """The grid column of each time (nearest point; -1 outside the grid)."""
        offsets = np.rint(np.asarray(times, dtype=np.float64) * 1000.0) - self.start_ms
        slots = np.rint(offsets / self.step_ms).astype(np.int64)
        return np.where((slots >= 0) & (slots < self.points), slots, -1)


def plan_range(start: float, end: float, step: float) -> RangePlan:
    """The grid a range query is evaluated on, with the step Prometheus will accept.

    The step is rounded up to whole milliseconds, and enlarged when the range would need
    more than MAX_REQUESTS_PER_QUERY requests of MAX_POINTS_PER_REQUEST points each.

    >>> plan = plan_range(1000.0, 1059.0, 15.0)
    >>> plan.points, plan.times().tolist()
    (4, [1000.0, 1015.0, 1030.0, 1045.0])
    """
    for name, value in (("start", start), ("end", end), ("step", step)):
        if not (isinstance(value, int | float) and math.isfinite(value)):
            raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    if step <= 0:
        raise ValueError(f"step must be positive, got {step!r}")
    if end < start:
        raise ValueError(f"end ({end}) is before start ({start})")
    start_ms, end_ms = round(start * 1000.0), round(end * 1000.0)
    step_ms = max(1, math.ceil(step * 1000.0 - 1e-6))
    most = MAX_POINTS_PER_REQUEST * MAX_REQUESTS_PER_QUERY
    if (end_ms - start_ms) // step_ms + 1 > most:
        step_ms = math.ceil((end_ms - start_ms) / (most - 1))
    return RangePlan(start_ms, step_ms, (end_ms - start_ms) // step_ms + 1)


class RangeQuerier(Protocol):
    def query_range(self, expr: str, start: float, end: float, step: float) -> list[RangeSeries]: ...


class _HeaderAuth(AuthBase):
    """Sets one Authorization header (and keeps requests from looking in ~/.netrc)."""

    def __init__(self, value: str) -> None:
        self.value = value

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self.value
        return request


class PromClient:
    """Range queries against a Prometheus-compatible HTTP API, bounded and retried.

    Each request has `source.timeout` seconds in total and MAX_RESPONSE_BYTES of body;
    connection errors, timeouts, 429 and 5xx are retried `source.retries` times with
    exponential backoff through `sleep` (default: the clock's). Every failure is a
    ScrapeError of one line naming the server without credentials or query string.

    >>> client = PromClient(PromSource(url="http://127.0.0.1:9090"))  # doctest: +SKIP
    >>> client.query_range('sum(rate(http_requests_total[1m]))', 1.7e9, 1.7e9 + 3600, 60)  # doctest: +SKIP
    [RangeSeries(labels={}, times=array([...]), values=array([...]))]
    """

    def __init__(
        self,
        source: PromSource,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Clock | None = None,
        max_bytes: int = MAX_RESPONSE_BYTES,
        stopping: threading.Event | None = None,
        interrupter: Interrupter | None = None,
    ) -> None:
        self.source = source
        # Set when the monitor shuts down: no further attempt, no backoff waited out; and
        # the attempt under way is cut short by the interrupter, not run to its timeout.
        self._stopping = stopping or threading.Event()
        self._interrupter = interrupter or Interrupter()
        self.where = f"Prometheus {redact_url(source.url)}"
        self._url, self._url_params = _endpoint(source.url)
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        self._sleep = sleep if sleep is not None else _clock_sleep(clock or WallClock(),
                                                                   self._stopping)
        self._max_bytes = max_bytes

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[RangeSeries]:
        """The series of `expr` at start, start + step, ... <= end, in as many requests as needed.

        >>> client.query_range("up", 1767225600, 1767225660, 15)  # doctest: +SKIP
        [RangeSeries(labels={'__name__': 'up', 'job': 'shop', ...}, times=..., values=...)]
        """
        plan = plan_range(start, end, step)
        auth = self._auth()
        parts = [self._query_chunk(expr, first, last, plan.step_ms, auth) for first, last in plan.chunks()]
        return _stitch(parts, plan)

    def metric_names(self, start: float, end: float) -> set[str]:
        """Every metric name the server holds samples of between `start` and `end`
        (`/api/v1/label/__name__/values`; bounded, since Mimir reads its whole retention
        without them, and never a partial answer, which Thanos gives by default)."""
        url = self._url.removesuffix(API_PATH) + NAMES_PATH
        params = [*self._url_params, ("start", _seconds(round(start * 1000))),
                  ("end", _seconds(round(end * 1000))), ("partial_response", "false")]
        auth = self._auth()
        data = self._with_retries(lambda: self._send(params, auth, url=url))
        if not isinstance(data, list) or not all(isinstance(name, str) for name in data):
            raise ScrapeError(f"{self.where}: the metric names are not a list of strings")
        return set(data)

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> PromClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _query_chunk(
        self, expr: str, first_ms: int, last_ms: int, step_ms: int, auth: AuthBase | None
    ) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
        params = [
            *self._url_params,
            ("query", expr),
            ("start", _seconds(first_ms)),
            ("end", _seconds(last_ms)),
            ("step", _seconds(step_ms)),
            ("partial_response", "false"),  # Thanos: a missing store must fail the query
            ("timeout", f"{self.source.timeout:g}"),
        ]
        data = self._with_retries(lambda: self._send(params, auth))
        return _matrix(data, self.where)

    def _with_retries(self, send: Callable[[], Any]) -> Any:
        attempts = self.source.retries + 1
        for attempt in range(attempts):
            if self._stopping.is_set():
                raise ScrapeError(f"{self.where}: not asked: the monitor is stopping")
            try:
                return send()
            except TransientScrapeError as exc:
                if attempt + 1 == attempts:
                    tried = f" (gave up after {attempts} attempts)" if attempts > 1 else ""
                    raise ScrapeError(f"{exc}{tried}") from None
                self._sleep(_backoff(attempt, exc.retry_after))
        raise AssertionError("unreachable")

    def _send(self, params: list[tuple[str, str]], auth: AuthBase | None, *,
              url: str | None = None) -> Any:
        """One request: its answer's `data`, or a ScrapeError (TransientScrapeError when worth retrying)."""
        form = len(urlencode(params)) > POST_ABOVE_BYTES
        request = requests.Request(
            "POST" if form else "GET", url or self._url,
            params=None if form else params, data=params if form else None,
            headers=self._headers(), auth=auth,
        )
        with interruptible(self._interrupter):
            response, body = bounded_request(
                self._session, request, where=self.where, timeout=self.source.timeout,
                max_bytes=self._max_bytes, any_status=True,  # its error text is in the body
            )
        return _answer(response, body, self.where)

    def _headers(self) -> CaseInsensitiveDict[str]:
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(
            {"Accept": "application/json", "Accept-Encoding": "gzip"}  # gzip: what the reader inflates
        )
        if self.source.tenant:
            headers["X-Scope-OrgID"] = self.source.tenant
        return headers

    def _auth(self) -> AuthBase | None:
        """Credentials as configured, read afresh for each query so rotated tokens are seen."""
        source = self.source
        bearer = bool(source.bearer_token_env or source.bearer_token_file)
        if bearer and source.basic_user:
            raise ScrapeError(f"{self.where}: set a bearer token or basic auth, not both")
        if bearer:
            token = _secret(source.bearer_token_env, source.bearer_token_file, "bearer token", self.where)
            return _HeaderAuth(f"Bearer {token}")
        if source.basic_user:
            password = ""
            if source.basic_password_env or source.basic_password_file:
                password = _secret(
                    source.basic_password_env, source.basic_password_file, "basic auth password", self.where
                )
            pair = base64.b64encode(f"{source.basic_user}:{password}".encode()).decode("ascii")
            return _HeaderAuth(f"Basic {pair}")
        return None


def _endpoint(url: str) -> tuple[str, list[tuple[str, str]]]:
    """The query_range URL under the source's path prefix, and the source URL's own parameters."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/") + API_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")), parse_qsl(parts.query)


def _seconds(milliseconds: int) -> str:
    """Exact decimal seconds: Prometheus rounds what it parses to the millisecond."""
    sign = "-" if milliseconds < 0 else ""
    whole, rest = divmod(abs(milliseconds), 1000)
    return f"{sign}{whole}.{rest:03d}" if rest else f"{sign}{whole}"


def _clock_sleep(clock: Clock, stopping: threading.Event) -> Callable[[float], None]:
    def sleep(seconds: float) -> None:
        clock.sleep_until(clock.now() + seconds, stopping)

    return sleep


def _backoff(attempt: int, retry_after: float | None) -> float:
    """Seconds before the next attempt: doubling from BACKOFF_FIRST, at least Retry-After."""
    delay = BACKOFF_FIRST * 2.0**attempt
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, BACKOFF_MAX)


def _secret(env: str, file: str, what: str, where: str) -> str:
    """A credential from an environment variable or a file; errors name them, never the value."""
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ScrapeError(f"{where}: environment variable {env} (the {what}) is not set")
        origin = f"environment variable {env}"
    else:
        try:
            value = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ScrapeError(f"{where}: cannot read the {what} file {file}: {reason}") from None
        origin = f"file {file}"
    value = value.strip()  # files end with a newline; a header must not
    if not value:
        raise ScrapeError(f"{where}: the {what} in {origin} is empty")
    return value


def _answer(response: requests.Response, body: bytes, where: str) -> Any:
    """The `data` of a successful answer; the server's own error text otherwise."""
    payload = _json(body)
    status = response.status_code
    failed = not 200 <= status < 300 or (isinstance(payload, dict) and payload.get("status") == "error")
    if failed:
        raise _error(status, response, payload, where)
    if not isinstance(payload, dict) or payload.get("status") != "success":
        raise ScrapeError(f"{where}: answer is not a Prometheus API response (JSON with status success)")
    if payload.get("isPartial") is True:  # VictoriaMetrics cluster with a storage node down
        raise ScrapeError(f"{where}: partial data: the server answered without some of its storage")
    for warning in payload.get("warnings") or []:
        text = str(warning)
        if not _HARMLESS_WARNING.match(text):
            raise ScrapeError(f"{where}: partial data: {_one_line(text)}")
    return payload.get("data")


def _error(status: int, response: requests.Response, payload: Any, where: str) -> ScrapeError:
    error_type = error = ""
    if isinstance(payload, dict):
        error_type, error = str(payload.get("errorType", "")), str(payload.get("error", ""))
    reason = printable(response.reason or "", limit=60)
    what = f"HTTP {status} {error_type}: {_one_line(error)}" if error else f"HTTP {status} {reason}".rstrip()
    message = f"{where}: {what}"
    if (status == 429 or status >= 500) and error_type != "bad_data":
        return TransientScrapeError(message, _retry_after(response))
    return ScrapeError(message)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):  # nested past the parser's depth
        return None


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    return float(value) if value.isascii() and value.isdigit() else None  # not "²"


def _one_line(text: str) -> str:
    return printable(" ".join(text.split()), limit=_ERROR_TEXT_LIMIT)


def _matrix(data: Any, where: str) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
    """Labels, times and values of each series of a range query's `data`, checked strictly."""
    if not isinstance(data, dict) or data.get("resultType") != "matrix":
        got = data.get("resultType") if isinstance(data, dict) else type(data).__name__
        raise ScrapeError(f"{where}: expected a matrix result, got {got!r}")
    result = data.get("result")
    if not isinstance(result, list):
        raise ScrapeError(f"{where}: the matrix result is not a list")
    return [_series(entry, where) for entry in result]


def _series(entry: Any, where: str) -> tuple[dict[str, str], np.ndarray, np.ndarray]:
    if not isinstance(entry, dict):
        raise ScrapeError(f"{where}: a series of the result is not an object")
    labels = entry.get("metric", {})
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise ScrapeError(f"{where}: a series has labels that are not strings")
    if entry.get("histograms"):
        raise ScrapeError(f"{where}: native histogram samples are not supported; use histogram_quantile")
    pairs = entry.get("values", [])
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        raise ScrapeError(f"{where}: a series' values are not [time, \"value\"] pairs")
    times = _times([pair[0] for pair in pairs], where)
    return labels, times, _values([pair[1] for pair in pairs], where)


def _times(stamps: list[Any], where: str) -> np.ndarray:
    if not all(type(stamp) in (int, float) for stamp in stamps):
        raise ScrapeError(f"{where}: a sample time is not a number")
    times = np.asarray(stamps, dtype=np.float64)
    if not np.all(np.isfinite(times)):
        raise ScrapeError(f"{where}: a sample time is not finite")
    return times


def _values(texts: list[Any], where: str) -> np.ndarray:
    """Sample values as Prometheus writes them: decimal, NaN, +Inf or -Inf, nothing else."""
    strings = all(type(text) is str for text in texts)
    if strings and (not texts or _VALUES.fullmatch("\n".join(texts))):
        try:
            return np.asarray(texts, dtype=np.float64)
        except ValueError:
            pass  # a value holding a newline got past the joined match
    bad = next(
        (t for t in texts if not (type(t) is str and "\n" not in t and re.fullmatch(_VALUE, t))), None
    )
    raise ScrapeError(f"{where}: sample value {printable(repr(bad), limit=40)} is not a number")


def _stitch(
    parts: Sequence[list[tuple[dict[str, str], np.ndarray, np.ndarray]]], plan: RangePlan
) -> list[RangeSeries]:
    """Join each series across consecutive requests: sorted, one sample per millisecond, and
    nothing outside the range asked for (servers that align a range to its step answer more)."""
    found: dict[tuple[tuple[str, str], ...], list[tuple[np.ndarray, np.ndarray]]] = {}
    for part in parts:
        for labels, times, values in part:
            found.setdefault(tuple(sorted(labels.items())), []).append((times, values))
    stitched = []
    for key, pieces in found.items():
        millis = np.rint(np.concatenate([times for times, _ in pieces]) * 1000.0).astype(np.int64)
        values = np.concatenate([values for _, values in pieces])
        unique, first = np.unique(millis, return_index=True)
        inside = (unique >= plan.start_ms) & (unique <= plan.start_ms + (plan.points - 1) * plan.step_ms)
        if np.any(inside):
            stitched.append(RangeSeries(dict(key), unique[inside] / 1000.0, values[first[inside]]))
    return stitched


def substitute(query: str, variables: Mapping[str, str]) -> str:
    """Replace `$version`, `$service` and `$step` by their values, escaped for a
    double-quoted matcher.

    >>> substitute('up{version="$version"}', {"version": 'v2"3'})
    'up{version="v2\\\\"3"}'

    Inside `=~` the value is a regular expression: a version's dots match any character.
    """
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise ValueError(f"the query uses ${name} but no value was given for it: {query!r}")
        # JSON string escapes (\\ \" \n \uXXXX) are all valid PromQL (Go) string escapes.
        return json.dumps(str(variables[name]), ensure_ascii=False)[1:-1]

    return _PLACEHOLDER.sub(value, query)


def promql_frame(
    client: RangeQuerier,
    rules: Sequence[SignalRule],
    *,
    start: float,
    end: float,
    step: float,
    variables: Mapping[str, str],
) -> SignalFrame:
    """One row per rule on the grid start, start + step, ... <= end, read by PromQL.

    A rule's `query` gives its values; a ratio rule's `numerator_query` and
    `denominator_query` give counts per step (events, trials) and values = events / trials.
    `$step` in a query is the step the grid really has (in milliseconds, as PromQL reads a
    duration), so `increase(x[$step])` counts each event once; a fixed window longer than
    the step would count it in several points. The series of one query are combined per
    time by the rule's `aggregate` (counts are summed); a time no series covers is NaN.

    >>> rule = SignalRule(name="errors", kind="ratio",
    ...     numerator_query='sum(increase(http_request_errors_total{version="$version"}[$step]))',
    ...     denominator_query='sum(increase(http_requests_total{version="$version"}[$step]))')
    >>> frame = promql_frame(client, [rule], start=t0, end=t0 + 3600, step=60,
    ...                      variables={"version": "v2.3", "service": "shop"})  # doctest: +SKIP
    """
    plan = plan_range(start, end, step)
    shape = (len(rules), plan.points)
    values, events, trials = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)

    filled = {**variables, "step": f"{plan.step_ms}ms"}

    def read(rule: SignalRule, query: str, how: str) -> np.ndarray:
        try:
            series = client.query_range(substitute(query, filled), start, end, step)
        except ScrapeError as exc:
            raise ScrapeError(f"signal {rule.name}: {exc}") from None
        return _on_grid(series, plan, how)

    for row, rule in enumerate(rules):
        if rule.kind == "ratio" and rule.numerator_query and rule.denominator_query:
            events[row] = read(rule, rule.numerator_query, "sum")
            trials[row] = read(rule, rule.denominator_query, "sum")
            with np.errstate(invalid="ignore", divide="ignore"):
                values[row] = np.where(trials[row] > 0, events[row] / trials[row], np.nan)
        elif rule.query:
            values[row] = read(rule, rule.query, rule.aggregate)
        else:
            raise ConfigError(
                f"signal {rule.name}: no PromQL query (set query, or numerator_query and "
                "denominator_query for a ratio)"
            )
    return SignalFrame(tuple(rule.name for rule in rules), plan.times(), measured(values),
                       measured(events), measured(trials))


def _on_grid(series: Sequence[RangeSeries], plan: RangePlan, how: str) -> np.ndarray:
    """Series placed on the plan's grid and combined per column (sum, mean or max)."""
    block = np.full((len(series), plan.points), np.nan)
    for row, one in enumerate(series):
        slots = plan.slots(one.times)
        inside = slots >= 0
        block[row, slots[inside]] = one.values[inside]
    seen = ~np.isnan(block)
    count = seen.sum(axis=0)
    if how == "max":
        combined = np.where(seen, block, -np.inf).max(axis=0, initial=-np.inf)
    else:
        combined = np.where(seen, block, 0.0).sum(axis=0)
        if how == "mean":
            combined = combined / np.maximum(count, 1)
    return np.where(count > 0, combined, np.nan)
