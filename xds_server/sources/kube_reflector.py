"""One list-then-watch reflector: the protocol state (pure) and the thread that drives it.

`ReflectorState` turns a list or a watch event into sink operations; it keeps the last good
version of every object so that a malformed update is rejected without losing what was served.
`Reflector` is the I/O: list (paged), watch from the list's resourceVersion with bookmarks,
re-watch from the last resourceVersion when a stream ends or drops, relist on 410 Gone, back off
with jitter on errors. It runs in its own thread with the synchronous official client and hands
every batch of operations to `deliver`, which the source forwards to the event loop.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from xds_server.config import ConfigObject, ObjectRef, Problem
from xds_server.config.parse import parse
from xds_server.sources.kube_kinds import WatchTarget

log = logging.getLogger(__name__)

WHERE = "kubernetes"
Key = tuple[str, str]  # (namespace, name) as the API server names the object
ParseFn = Callable[[Mapping[str, Any], str], tuple[ConfigObject | None, list[Problem]]]


# ---------------------------------------------------------------- operations handed to the loop
@dataclass(frozen=True, slots=True)
class Replace:
    origin: str
    objects: tuple[ConfigObject, ...]


@dataclass(frozen=True, slots=True)
class Upsert:
    origin: str
    obj: ConfigObject


@dataclass(frozen=True, slots=True)
class Delete:
    origin: str
    ref: ObjectRef


@dataclass(frozen=True, slots=True)
class Report:
    origin: str
    problems: tuple[Problem, ...]


@dataclass(frozen=True, slots=True)
class Synced:
    """The reflector finished its first list (or found its kind not served)."""

    origin: str


Op = Replace | Upsert | Delete | Report | Synced


# ---------------------------------------------------------------- protocol state (pure)
class ReflectorState:
    """What one reflector knows: the accepted object per (namespace, name), the problems of the
    rejected ones, and the resourceVersion to resume from. No I/O and no clock."""

    def __init__(self, origin: str, kind: str, api_version: str, parse_fn: ParseFn | None = None) -> None:
        self.origin = origin
        self.kind = kind
        self.api_version = api_version
        self.resource_version = ""
        self._parse = parse_fn or parse
        self._accepted: dict[Key, tuple[str, ConfigObject]] = {}  # key -> (object's rv, object)
        self._problems: dict[Key, tuple[Problem, ...]] = {}

    @property
    def objects(self) -> dict[Key, ConfigObject]:
        return {key: obj for key, (_, obj) in self._accepted.items()}

    def listed(self, items: Sequence[Any], resource_version: str) -> list[Op]:
        """A complete list: what is not in it has vanished (the store's replace removes it)."""
        accepted: dict[Key, tuple[str, ConfigObject]] = {}
        problems: dict[Key, tuple[Problem, ...]] = {}
        for index, item in enumerate(items):
            key, rv = _identity(item)
            if key is None:
                problems[("", f"#{index}")] = (self._nameless(),)
                continue
            previous = self._accepted.get(key)
            if previous is not None and rv and previous[0] == rv:
                accepted[key] = previous  # unchanged: same object, so the store sees no change
                if key in self._problems:
                    problems[key] = self._problems[key]
                continue
            obj, found = self._convert(item)
            if found:
                problems[key] = found
            if obj is not None:
                accepted[key] = (rv, obj)
            elif previous is not None and _rejected(found):
                accepted[key] = previous  # keep serving the last good version
        self._accepted = accepted
        self.resource_version = resource_version
        self._problems = problems
        return [Replace(self.origin, tuple(obj for _, obj in accepted.values())), self._report()]

    def event(self, type_: str, item: Any) -> list[Op]:
        """One watch event (ADDED, MODIFIED, DELETED, BOOKMARK; ERROR is the driver's)."""
        key, rv = _identity(item)
        if rv:
            self.resource_version = rv
        if type_ == "BOOKMARK" or key is None:
            if key is None and type_ != "BOOKMARK":
                log.warning("%s: ignoring a %s event without metadata.name", self.origin, type_)
            return []
        ops: list[Op] = []
        if type_ == "DELETED":
            previous = self._accepted.pop(key, None)
            if previous is not None:
                ops.append(Delete(self.origin, previous[1].ref))
            found: tuple[Problem, ...] = ()
        elif type_ in ("ADDED", "MODIFIED"):
            obj, found = self._convert(item)
            if obj is not None:
                self._accepted[key] = (rv, obj)
                ops.append(Upsert(self.origin, obj))
            elif not _rejected(found):
                # Converted to nothing (e.g. a mesh ConfigMap without `mesh`): it no longer counts.
                previous = self._accepted.pop(key, None)
                if previous is not None:
                    ops.append(Delete(self.origin, previous[1].ref))
        else:
            log.warning("%s: ignoring a watch event of unknown type %r", self.origin, type_)
            return []
        if self._problems.get(key, ()) != found:
            if found:
                self._problems[key] = found
            else:
                self._problems.pop(key, None)
            ops.append(self._report())
        return ops

    def cleared(self) -> list[Op]:
        """The kind is not served (CRD missing): none of its objects exist."""
        self._accepted.clear()
        self._problems.clear()
        self.resource_version = ""
        return [Replace(self.origin, ()), self._report()]

    def _convert(self, item: Any) -> tuple[ConfigObject | None, tuple[Problem, ...]]:
        doc = dict(item)
        # Items of built-in lists come without kind/apiVersion: the list's type says what they are.
        doc.setdefault("kind", self.kind)
        doc.setdefault("apiVersion", self.api_version)
        try:
            obj, problems = self._parse(doc, WHERE)
        except Exception as e:  # a bug in parse must not take the reflector down
            log.exception("%s: parse failed", self.origin)
            meta = doc.get("metadata") or {}
            ref = ObjectRef(self.kind, str(meta.get("namespace", "")), str(meta.get("name", "")))
            return None, (Problem(ref, f"cannot be parsed: {type(e).__name__}: {e}", WHERE),)
        for problem in problems:
            if not problem.warning:
                log.warning("rejected: %s", problem)
        return obj, tuple(problems)

    def _nameless(self) -> Problem:
        log.warning("%s: rejected an item without metadata.name", self.origin)
        return Problem(None, f"{self.kind} without metadata.name: rejected", WHERE)

    def _report(self) -> Report:
        return Report(self.origin, tuple(p for key in sorted(self._problems) for p in self._problems[key]))


def _identity(item: Any) -> tuple[Key | None, str]:
    meta = item.get("metadata") if isinstance(item, Mapping) else None
    if not isinstance(meta, Mapping):
        return None, ""
    rv = str(meta.get("resourceVersion") or "")
    name = meta.get("name")
    if not name or not isinstance(name, str):
        return None, rv
    return (str(meta.get("namespace") or ""), name), rv


def _rejected(problems: Sequence[Problem]) -> bool:
    return any(not p.warning for p in problems)


# ---------------------------------------------------------------- backoff
class Backoff:
    """Exponential backoff with jitter: the n-th consecutive failure waits base*2^n, capped at
    max, scaled by a random factor in [0.5, 1] so that reflectors do not reconnect in lockstep."""

    def __init__(self, base: float, maximum: float, rng: random.Random | None = None) -> None:
        self.base = base
        self.maximum = maximum
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        delay = min(self.maximum, self.base * 2**self.failures)
        self.failures += 1
        return delay * self._rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0


# ---------------------------------------------------------------- the driver (thread)
class _Stopped(Exception):
    pass


class _Gone(Exception):
    """410: the resourceVersion is too old; only a relist can resynchronise."""


class _NotServed(Exception):
    """Every version of the kind answered 404: its CRD is not installed."""


class _WatchError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ReflectorSettings:
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    watch_timeout: float = 300.0  # each watch asks for [t, 2t) seconds, like client-go
    page_size: int = 500
    request_timeout: float = 60.0  # list requests; and added to watch_timeout as the read timeout
    connect_timeout: float = 10.0


class Reflector:
    def __init__(
        self,
        target: WatchTarget,
        make_client: Callable[[], ApiClient],
        deliver: Callable[[list[Op]], None],
        settings: ReflectorSettings,
        parse_fn: ParseFn | None = None,
    ) -> None:
        self.target = target
        self._make_client = make_client
        self._deliver = deliver
        self._settings = settings
        spec = target.spec
        self._version = spec.versions[0]
        self.state = ReflectorState(target.origin, spec.kind, spec.api_version(self._version), parse_fn)
        self._backoff = Backoff(settings.backoff_base, settings.backoff_max)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._response: urllib3.HTTPResponse | None = None
        self._synced = False
        self._gone_streak = 0  # 410s since the last watch that delivered something
        self.lists = 0  # complete lists delivered (the first one and every relist)
        self.watches = 0  # watch requests the server accepted
        self._last_trouble = ""  # to log a recurring problem once, then at debug
        self._thread = threading.Thread(target=self._run, name=f"reflector {target.origin}", daemon=True)

    # ------------------------------------------------------------ control (any thread)
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end, unblocking a read in progress by shutting its socket."""
        self._stopping.set()
        with self._lock:
            response = self._response
        if response is not None:
            try:
                response.shutdown()
            except Exception:  # already closed or never connected: nothing to unblock
                pass

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------ the thread
    def _run(self) -> None:
        api = self._make_client()
        try:
            self._loop(api)
        except _Stopped:
            pass
        finally:
            api.close()
            log.debug("%s: reflector stopped", self.target.origin)

    def _loop(self, api: ApiClient) -> None:
        need_list = True
        while not self._stopping.is_set():
            try:
                if need_list:
                    self._list(api)
                    need_list = False
                if self._watch(api):
                    self._backoff.reset()
                    continue  # the stream ended (timeoutSeconds): resume from the last rv at once
                delay = self._backoff.next_delay()
            except _Stopped:
                return
            except Exception as e:
                if self._stopping.is_set():
                    return  # the error is stop() closing the socket
                need_list, delay = self._recover(e, need_list)
            if delay and self._stopping.wait(delay):
                return

    def _recover(self, error: Exception, need_list: bool) -> tuple[bool, float]:
        """What to do after an error: (relist?, seconds to wait first)."""
        if isinstance(error, _Gone) or (isinstance(error, ApiException) and error.status == 410):
            log.info("%s: resourceVersion %s expired (410), relisting",
                     self.target.origin, self.state.resource_version)  # fmt: skip
            # Relist at once; but a server that keeps answering 410 gets backoff, not a spin.
            self._gone_streak += 1
            return True, self._backoff.next_delay() if self._gone_streak > 1 else 0.0
        if isinstance(error, _NotServed):
            self._not_served()
            return True, self._backoff.next_delay()
        if isinstance(error, ApiException):
            self._trouble(error)
            # A 404 while watching: the kind went away (or changed version); find out by listing.
            return need_list or error.status == 404, self._backoff.next_delay()
        if isinstance(error, _WatchError | urllib3.exceptions.HTTPError | OSError | ValueError):
            # Connection refused or dropped, bad JSON: resume the watch from the last
            # resourceVersion (or redo the list if that is where it failed).
            self._trouble(error)
            return need_list, self._backoff.next_delay()
        # A bug, or something unexpected from the client: log it whole, and keep going.
        if self._last_trouble != type(error).__name__:
            log.exception("%s: unexpected error", self.target.origin)
        self._last_trouble = type(error).__name__
        return need_list, self._backoff.next_delay()

    def _list(self, api: ApiClient) -> None:
        spec = self.target.spec
        for version in spec.versions:
            try:
                items, rv = self._list_pages(api, version)
            except ApiException as e:
                if e.status == 404:
                    continue  # this version (or the whole CRD) is not served: try the next
                raise
            if version != self._version:
                log.info("%s: using %s", self.target.origin, spec.api_version(version))
                self._version = version
                self.state.api_version = spec.api_version(version)
            ops = self.state.listed(items, rv)
            self.lists += 1
            self._trouble_over()
            if not self._gone_streak:  # a relist forced by repeated 410s is no sign of health
                self._backoff.reset()
            if not self._synced:
                self._synced = True
                ops.append(Synced(self.target.origin))
            log.debug("%s: listed %d items at resourceVersion %s", self.target.origin, len(items), rv)
            self._deliver(ops)
            return
        raise _NotServed

    def _list_pages(self, api: ApiClient, version: str) -> tuple[list[Any], str]:
        items: list[Any] = []
        token = ""
        restarts = 0
        timeout = (self._settings.connect_timeout, self._settings.request_timeout)
        while True:
            params: dict[str, Any] = {"limit": self._settings.page_size, "_request_timeout": timeout}
            if token:
                params["_continue"] = token
            try:
                with self._request(api, version, **params) as response:
                    body = json.loads(response.read())
            except ApiException as e:
                # A continue token that outlived its snapshot: start the list again, consistently.
                if e.status == 410 and token and restarts < 3:
                    items, token, restarts = [], "", restarts + 1
                    continue
                raise
            items.extend(body.get("items") or ())
            meta = body.get("metadata") or {}
            token = meta.get("continue") or ""
            if not token:
                return items, str(meta.get("resourceVersion") or "")

    def _watch(self, api: ApiClient) -> bool:
        """Watch from the current resourceVersion until the stream ends. True if it was useful
        (events arrived or it lasted), False for a suspiciously short empty stream."""
        settings = self._settings
        seconds = int(settings.watch_timeout * random.uniform(1.0, 2.0)) or 1
        started = time.monotonic()
        events = 0
        with self._request(
            api,
            self._version,
            watch=True,
            resource_version=self.state.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=seconds,
            _request_timeout=(settings.connect_timeout, seconds + settings.request_timeout),
        ) as response:
            self.watches += 1
            for line in _lines(response):
                event = json.loads(line)
                type_, obj = event.get("type"), event.get("object")
                if type_ == "ERROR":
                    code = obj.get("code") if isinstance(obj, Mapping) else None
                    if code == 410:
                        raise _Gone
                    message = obj.get("message") if isinstance(obj, Mapping) else obj
                    raise _WatchError(f"watch error {code}: {message}")
                events += 1
                self._gone_streak = 0
                ops = self.state.event(str(type_), obj)
                if ops:
                    self._deliver(ops)
                if events == 1:
                    self._trouble_over()
        if self._stopping.is_set():
            raise _Stopped
        # client-go treats a watch that closed within a second with nothing in it as an error.
        return events > 0 or time.monotonic() - started >= min(1.0, settings.watch_timeout / 2)

    def _request(self, api: ApiClient, version: str, **params: Any) -> _Open:
        return _Open(self, self.target.request(api, version, **params))

    def _not_served(self) -> None:
        spec = self.target.spec
        versions = ", ".join(spec.api_version(v) for v in spec.versions)
        self._say(
            "not-served",
            logging.WARNING,
            "%s: %s.%s is not served by the API server (tried %s; is its CRD installed?); "
            "treating it as empty and retrying",
            self.target.origin,
            spec.plural,
            spec.group,
            versions,
        )
        ops = self.state.cleared()
        if not self._synced:
            self._synced = True  # a cluster without Istio's CRDs must still become ready
            ops.append(Synced(self.target.origin))
        self._deliver(ops)

    def _trouble(self, error: Exception) -> None:
        target = self.target.describe()
        if isinstance(error, ApiException):
            if error.status in (401, 403):
                self._say(
                    f"http-{error.status}",
                    logging.ERROR,
                    "%s: %s %s (%s): check the credentials and RBAC of the service account "
                    "(deploy/rbac.yaml grants get/list/watch)",
                    self.target.origin,
                    "not authenticated to read" if error.status == 401 else "forbidden to read",
                    target,
                    _status_message(error),
                )
                return
            self._say(f"http-{error.status}", logging.WARNING, "%s: reading %s failed: HTTP %s %s",
                      self.target.origin, target, error.status, _status_message(error))  # fmt: skip
            return
        self._say(type(error).__name__, logging.WARNING, "%s: reading %s failed: %s",
                  self.target.origin, target, error or type(error).__name__)  # fmt: skip

    def _trouble_over(self) -> None:
        if self._last_trouble:
            log.info("%s: reading %s again", self.target.origin, self.target.describe())
            self._last_trouble = ""

    def _say(self, trouble: str, level: int, message: str, *args: Any) -> None:
        """Log a problem clearly the first time, at debug while it keeps recurring."""
        log.log(level if trouble != self._last_trouble else logging.DEBUG, message, *args)
        self._last_trouble = trouble


class _Open:
    """Registers the response as the one `stop()` must unblock; closes it when done."""

    def __init__(self, reflector: Reflector, response: urllib3.HTTPResponse) -> None:
        self._reflector = reflector
        self._response = response

    def __enter__(self) -> urllib3.HTTPResponse:
        with self._reflector._lock:
            stopped = self._reflector._stopping.is_set()
            if not stopped:
                self._reflector._response = self._response
        if stopped:
            self._response.close()
            raise _Stopped
        return self._response

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        with self._reflector._lock:
            self._reflector._response = None
        if exc_type is None:
            self._response.release_conn()  # fully read: the connection can be reused
        else:
            self._response.close()


def _lines(response: urllib3.HTTPResponse) -> Iterator[bytes]:
    """The JSON lines of a watch stream, as chunks arrive."""
    pending = b""
    for chunk in response.stream(amt=None):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from (line for line in lines if line.strip())
    if pending.strip():
        yield pending


def _status_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "")["message"])
    except (ValueError, KeyError, TypeError):
        return str(error.reason or "")
