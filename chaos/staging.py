"""The local staging stack: the engine and its four dependencies, each behind a
Toxiproxy proxy, on 127.0.0.1 and free ports, without Docker.

``StagingStack(state_dir).up()`` starts, in a state folder (``.staging/`` at the repo
root by default):

==========  ==========================================  ===============================
component   process                                     proxy (name: what it forwards)
==========  ==========================================  ===============================
postgres    PostgreSQL (its own cluster; database and   ``postgres``
            user ``reslab``, password ``reslab``)
redis       redis-server, no persistence                ``redis``
s3          moto's S3 server (bucket ``reslab``)        ``s3``
llm         ``engine.service.llm_stub``                 ``openai``
toxiproxy   the Toxiproxy server                        —
engine      ``python -m engine.service``                —
==========  ==========================================  ===============================

The engine is configured (see :func:`engine_environment`) to reach every dependency
only through its proxy, so every fault is a toxic or a disabled proxy.

Each process runs in its own process group (session) and logs to
``<state>/logs/<component>.log``. ``staging.json`` records ports, pids, URLs, keys and
proxies. A process is "ours" only while its pid *and* its kernel start time match the
record, so a recycled pid is never signalled. ``up`` twice reuses what is alive and
restarts what died; ``down`` removes the proxies and stops exactly what was started;
``status`` reports each component alive, dead (it was started and is gone) or stopped.

PostgreSQL refuses to run as root; when we are root it runs as an unprivileged system
user (``reslab``, created with ``useradd --system`` if missing). Process inspection uses
``/proc``, so the stack is Linux-only; elsewhere use ``docker-compose.toxiproxy.yml``.

Environment: ``RESLAB_STAGING_DIR`` (state folder), ``RESLAB_PG_BIN`` (folder holding
initdb and postgres). The engine inherits the caller's environment under its own
variables, so e.g. ``RESLAB_SEED_SKUS`` can be set for it.

Command line: ``python -m chaos.staging [--state-dir D] up|down|status|env``
(:func:`staging_main`, also behind ``reslab staging``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx

from chaos.toxiproxy import ProxySpec, ToxiproxyClient, ToxiproxyError

__all__ = [
    "COMPONENTS",
    "DEPENDENCIES",
    "ENGINE_ENV_VARS",
    "PROXY_UPSTREAMS",
    "ComponentRecord",
    "ComponentStatus",
    "DownReport",
    "ProxyStatus",
    "StagingError",
    "StagingStack",
    "StagingState",
    "engine_environment",
    "find_postgres_bin",
    "find_redis_server",
    "find_toxiproxy_server",
    "free_ports",
    "staging_main",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"

DEPENDENCIES: tuple[str, ...] = ("postgres", "redis", "s3", "llm")
COMPONENTS: tuple[str, ...] = (*DEPENDENCIES, "toxiproxy", "engine")
# Proxy name -> the component it forwards to. The proxy names are the dependency names
# the engine, the scenarios and the policy use.
PROXY_UPSTREAMS: dict[str, str] = {
    "postgres": "postgres",
    "redis": "redis",
    "s3": "s3",
    "openai": "llm",
}

DB_NAME = "reslab"
DB_USER = "reslab"
DB_PASSWORD = "reslab"
S3_BUCKET = "reslab"
AWS_TEST_CREDENTIAL = "testing"
AWS_REGION = "us-east-1"
SYSTEM_USER = "reslab"

STATE_FILE = "staging.json"
STATE_SCHEMA = 1

ENGINE_ENV_VARS: tuple[str, ...] = (
    "RESLAB_HOST",
    "RESLAB_PORT",
    "RESLAB_PG_DSN",
    "RESLAB_REDIS_URL",
    "RESLAB_S3_ENDPOINT",
    "RESLAB_S3_BUCKET",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "RESLAB_LLM_BASE_URL",
    "RESLAB_LLM_API_KEY",
    "RESLAB_API_KEYS",
    "RESLAB_ADMIN_KEY",
    "RESLAB_POLICY",
)

# How each component is asked to stop: PostgreSQL's SIGTERM waits for every client to
# disconnect ("smart" shutdown); SIGINT is its "fast" shutdown.
_STOP_SIGNALS: dict[str, signal.Signals] = {"postgres": signal.SIGINT}
_STOP_GRACE_S = 10.0
_POLL_S = 0.05


class StagingError(RuntimeError):
    """The stack could not be started, reached or stopped; the message says why."""


# --------------------------------------------------------------------------- URLs, env


def postgres_dsn(host: str, port: int) -> str:
    return f"postgresql://{DB_USER}:{DB_PASSWORD}@{host}:{port}/{DB_NAME}"


def redis_url(host: str, port: int) -> str:
    return f"redis://{host}:{port}/0"


def http_url(host: str, port: int) -> str:
    return f"http://{host}:{port}"


def llm_base_url(host: str, port: int) -> str:
    return f"http://{host}:{port}/v1"


_URL_BUILDERS: dict[str, Callable[[str, int], str]] = {
    "postgres": postgres_dsn,
    "redis": redis_url,
    "s3": http_url,
    "llm": llm_base_url,
    "toxiproxy": http_url,
    "engine": http_url,
}


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def engine_environment(
    *,
    engine_host: str,
    engine_port: int,
    proxies: Mapping[str, str],
    api_keys: Sequence[str],
    admin_key: str,
    llm_api_key: str,
    policy_path: str,
    s3_bucket: str = S3_BUCKET,
) -> dict[str, str]:
    """The environment the engine reads, with every dependency reached through its proxy.

    ``proxies`` maps each proxy name (``postgres``, ``redis``, ``s3``, ``openai``) to the
    ``host:port`` the engine connects to. Both the local stack and
    ``docker-compose.toxiproxy.yml`` are checked against this one function.
    """
    missing = sorted(set(PROXY_UPSTREAMS) - set(proxies))
    if missing:
        raise ValueError(f"no proxy address for {', '.join(missing)}")
    if not api_keys:
        raise ValueError("at least one API key is needed")
    pg_host, pg_port = _split_address(proxies["postgres"])
    redis_host, redis_port = _split_address(proxies["redis"])
    s3_host, s3_port = _split_address(proxies["s3"])
    llm_host, llm_port = _split_address(proxies["openai"])
    env = {
        "RESLAB_HOST": engine_host,
        "RESLAB_PORT": str(engine_port),
        "RESLAB_PG_DSN": postgres_dsn(pg_host, pg_port),
        "RESLAB_REDIS_URL": redis_url(redis_host, redis_port),
        "RESLAB_S3_ENDPOINT": http_url(s3_host, s3_port),
        "RESLAB_S3_BUCKET": s3_bucket,
        "AWS_ACCESS_KEY_ID": AWS_TEST_CREDENTIAL,
        "AWS_SECRET_ACCESS_KEY": AWS_TEST_CREDENTIAL,
        "AWS_DEFAULT_REGION": AWS_REGION,
        "RESLAB_LLM_BASE_URL": llm_base_url(llm_host, llm_port),
        "RESLAB_LLM_API_KEY": llm_api_key,
        "RESLAB_API_KEYS": ",".join(api_keys),
        "RESLAB_ADMIN_KEY": admin_key,
        "RESLAB_POLICY": policy_path,
    }
    return env


# --------------------------------------------------------------------------- state


@dataclass
class ComponentRecord:
    """One component's port (kept across restarts) and, while started, its process."""

    port: int
    pid: int | None = None
    # Kernel start time of the process (clock ticks since boot): with the pid, the
    # identity of the process we started.
    start_ticks: int | None = None
    cmdline: list[str] = field(default_factory=list)
    started_at: str | None = None
    # Engine only: a digest of the environment it was started with, so that a change
    # of a proxy port restarts it.
    env_digest: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "cmdline": self.cmdline,
            "started_at": self.started_at,
            "env_digest": self.env_digest,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ComponentRecord:
        return cls(
            port=int(data["port"]),
            pid=data.get("pid"),
            start_ticks=data.get("start_ticks"),
            cmdline=list(data.get("cmdline") or []),
            started_at=data.get("started_at"),
            env_digest=data.get("env_digest"),
        )


@dataclass
class StagingState:
    """What ``staging.json`` holds. Ports and keys survive ``down`` so that URLs stay the
    same from one ``up`` to the next; pids are cleared by ``down``."""

    state_dir: Path
    components: dict[str, ComponentRecord] = field(default_factory=dict)
    proxy_ports: dict[str, int] = field(default_factory=dict)
    api_keys: list[str] = field(default_factory=list)
    admin_key: str = ""
    llm_api_key: str = ""
    policy_path: str = ""
    engine_enabled: bool = False

    # ---- addresses

    def url(self, component: str) -> str:
        """The component's own address (not through Toxiproxy)."""
        return _URL_BUILDERS[component](HOST, self.components[component].port)

    def proxy_address(self, proxy: str) -> str:
        return f"{HOST}:{self.proxy_ports[proxy]}"

    def proxy_url(self, proxy: str) -> str:
        """The address of a dependency as the engine reaches it: through its proxy."""
        return _URL_BUILDERS[PROXY_UPSTREAMS[proxy]](HOST, self.proxy_ports[proxy])

    @property
    def toxiproxy_url(self) -> str:
        return self.url("toxiproxy")

    @property
    def engine_url(self) -> str:
        return self.url("engine")

    @property
    def api_key(self) -> str:
        return self.api_keys[0]

    def log_path(self, component: str) -> Path:
        return self.state_dir / "logs" / f"{component}.log"

    def engine_env(self) -> dict[str, str]:
        return engine_environment(
            engine_host=HOST,
            engine_port=self.components["engine"].port,
            proxies={name: self.proxy_address(name) for name in PROXY_UPSTREAMS},
            api_keys=self.api_keys,
            admin_key=self.admin_key,
            llm_api_key=self.llm_api_key,
            policy_path=self.policy_path,
        )

    # ---- JSON

    def to_json(self) -> dict[str, Any]:
        components: dict[str, Any] = {}
        for name, record in self.components.items():
            components[name] = {
                **record.to_json(),
                "url": self.url(name),
                "log": str(self.log_path(name)),
            }
        proxies = {
            name: {
                "listen": self.proxy_address(name),
                "upstream": f"{HOST}:{self.components[target].port}",
                "url": self.proxy_url(name),
            }
            for name, target in PROXY_UPSTREAMS.items()
            if name in self.proxy_ports and target in self.components
        }
        data: dict[str, Any] = {
            "schema": STATE_SCHEMA,
            "updated_at": _utc_now(),
            "state_dir": str(self.state_dir),
            "host": HOST,
            "engine_enabled": self.engine_enabled,
            "policy_path": self.policy_path,
            "components": components,
            "proxies": proxies,
            "proxy_ports": self.proxy_ports,
            "keys": {
                "api_keys": self.api_keys,
                "admin_key": self.admin_key,
                "llm_api_key": self.llm_api_key,
            },
        }
        if "engine" in self.components and len(proxies) == len(PROXY_UPSTREAMS):
            data["engine_env"] = self.engine_env()
        return data

    @classmethod
    def from_json(cls, state_dir: Path, data: Mapping[str, Any]) -> StagingState:
        if data.get("schema") != STATE_SCHEMA:
            raise StagingError(f"{state_dir / STATE_FILE}: unknown schema {data.get('schema')}")
        keys = data.get("keys") or {}
        return cls(
            state_dir=state_dir,
            components={
                name: ComponentRecord.from_json(record)
                for name, record in (data.get("components") or {}).items()
                if name in COMPONENTS
            },
            proxy_ports={k: int(v) for k, v in (data.get("proxy_ports") or {}).items()},
            api_keys=list(keys.get("api_keys") or []),
            admin_key=str(keys.get("admin_key") or ""),
            llm_api_key=str(keys.get("llm_api_key") or ""),
            policy_path=str(data.get("policy_path") or ""),
            engine_enabled=bool(data.get("engine_enabled", False)),
        )


ComponentState = Literal["alive", "dead", "stopped"]


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    state: ComponentState
    pid: int | None
    port: int | None
    url: str | None
    log: str | None

    @property
    def alive(self) -> bool:
        return self.state == "alive"


@dataclass(frozen=True)
class DownReport:
    stopped: tuple[str, ...]
    proxies_removed: tuple[str, ...]


@dataclass(frozen=True)
class ProxyStatus:
    name: str
    listen: str
    upstream: str
    present: bool
    enabled: bool
    toxics: tuple[str, ...]


# --------------------------------------------------------------------------- processes

# Popen objects of the processes this Python process started, so that their exit is
# reaped (a zombie would otherwise look alive in /proc).
_children: dict[int, subprocess.Popen[bytes]] = {}


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat, or None when the process is gone or a zombie."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)
        return None
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is parenthesised and may hold spaces or parentheses.
    fields = raw.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields


def process_start_ticks(pid: int) -> int | None:
    """The kernel start time of a live process (clock ticks since boot), or None when it
    is gone or a zombie. With the pid, it names one process even after the pid is reused."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None  # field 22: starttime


def _is_ours(record: ComponentRecord) -> bool:
    if record.pid is None or record.start_ticks is None:
        return False
    return process_start_ticks(record.pid) == record.start_ticks


def _group_members(pgid: int, not_before_ticks: int) -> list[int]:
    """Live processes of the process group that started no earlier than its leader."""
    members: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(int(entry.name))
        if fields and int(fields[2]) == pgid and int(fields[19]) >= not_before_ticks:
            members.append(int(entry.name))
    return members


def _wait_gone(pid: int, start_ticks: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if process_start_ticks(pid) != start_ticks:
            return True
        time.sleep(_POLL_S)
    return process_start_ticks(pid) != start_ticks


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _stop_process(name: str, record: ComponentRecord) -> bool:
    """Stop the recorded process and what is left of its group. False if it was not ours
    (already gone, or its pid now belongs to another process)."""
    if record.pid is None or record.start_ticks is None or not _is_ours(record):
        return False
    pid, ticks = record.pid, record.start_ticks
    _signal(pid, _STOP_SIGNALS.get(name, signal.SIGTERM))
    if not _wait_gone(pid, ticks, time.monotonic() + _STOP_GRACE_S):
        _signal(pid, signal.SIGKILL)
        _wait_gone(pid, ticks, time.monotonic() + 5.0)
    # Children it left behind in its group (it is the group's leader: pgid == pid).
    for member in _group_members(pid, ticks):
        _signal(member, signal.SIGKILL)
    _children.pop(pid, None)
    return True


def _tail(path: Path, lines: int = 30) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 16_384))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers do, so that a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports(count: int, avoid: set[int] | None = None) -> list[int]:
    """Ports the kernel picks as free, none of them in ``avoid`` (which receives them
    too). The sockets stay open until all are picked so that no port comes twice."""
    avoid = set() if avoid is None else avoid
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
            if port not in avoid:
                ports.append(port)
                avoid.add(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports


def _tcp_accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _http_ok(url: str, *, any_status: bool = False) -> bool:
    try:
        response = httpx.get(url, timeout=1.0)
    except httpx.HTTPError:
        return False
    return any_status or response.status_code == 200


def _redis_pong(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


# --------------------------------------------------------------------------- tools


def find_postgres_bin() -> Path:
    configured = os.environ.get("RESLAB_PG_BIN")
    candidates = [Path(configured)] if configured else []
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += versions
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "postgres").is_file():
            return directory
    raise StagingError(
        "PostgreSQL server binaries (initdb, postgres) not found: run scripts/setup-system.sh "
        "(Debian package postgresql) or set RESLAB_PG_BIN"
    )


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise StagingError(
            "redis-server not found: run scripts/setup-system.sh (Debian package redis-server)"
        )
    return found


def find_toxiproxy_server(python: str | None = None) -> str:
    """On PATH, else beside the Python interpreter (the virtualenv's bin/)."""
    found = shutil.which("toxiproxy-server")
    if found:
        return found
    directories = [Path(python or sys.executable).parent, Path(sys.prefix) / "bin"]
    for directory in (*directories, REPO_ROOT / ".venv/bin"):
        candidate = directory / "toxiproxy-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise StagingError("toxiproxy-server not found: run scripts/setup-system.sh")


def _system_user(name: str) -> pwd.struct_passwd:
    """The unprivileged user PostgreSQL runs as when we are root; created if missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    command = [
        "useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
        "--shell", "/usr/sbin/nologin", "--user-group", name,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0 and result.returncode != 9:  # 9: the user already exists
        raise StagingError(f"could not create system user {name}: {result.stderr.strip()}")
    return pwd.getpwnam(name)


# --------------------------------------------------------------------------- the stack


@dataclass(frozen=True)
class _Launch:
    component: str
    argv: list[str]
    ready: Callable[[], bool]
    env: dict[str, str] | None = None
    cwd: Path | None = None
    run_as: pwd.struct_passwd | None = None


class StagingStack:
    """Start, inspect and stop the local staging stack in one state folder."""

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        python: str | None = None,
        policy_path: Path | str | None = None,
        llm_latency_median_ms: float = 40.0,
        llm_latency_sigma: float = 0.3,
        llm_seed: int = 1,
        system_user: str = SYSTEM_USER,
    ) -> None:
        default_dir = os.environ.get("RESLAB_STAGING_DIR") or REPO_ROOT / ".staging"
        self.state_dir = Path(state_dir or default_dir).resolve()
        self.python = python or sys.executable
        self.policy_path = str(Path(policy_path or REPO_ROOT / "policies/default.yaml"))
        self.llm_latency_median_ms = llm_latency_median_ms
        self.llm_latency_sigma = llm_latency_sigma
        self.llm_seed = llm_seed
        self.system_user = system_user

    # ---- paths and state

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def postgres_dir(self) -> Path:
        return self.state_dir / "postgres"

    def load_state(self) -> StagingState | None:
        """The recorded state, or None when the stack was never started here."""
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            raise StagingError(f"cannot read {self.state_file}: {exc}") from exc
        return StagingState.from_json(self.state_dir, data)

    def _save(self, state: StagingState) -> None:
        # Written after every start so that `down` can always find what runs, and
        # readable only by us: it holds the API keys.
        tmp = self.state_file.with_suffix(".json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(state.to_json(), handle, indent=2, sort_keys=False)
            handle.write("\n")
        os.replace(tmp, self.state_file)

    @contextlib.contextmanager
    def _locked(self, timeout: float = 120.0) -> Iterator[None]:
        """One `up`/`down` at a time per state folder."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / ".lock").open("a") as handle:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        raise StagingError(
                            f"another staging command holds {self.state_dir}/.lock"
                        ) from exc
                    time.sleep(0.1)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _new_state(self) -> StagingState:
        return StagingState(
            state_dir=self.state_dir,
            api_keys=[secrets.token_urlsafe(24)],
            admin_key=secrets.token_urlsafe(32),
            llm_api_key="stub-" + secrets.token_urlsafe(16),
            policy_path=self.policy_path,
        )

    def _assign_ports(self, state: StagingState) -> None:
        """Keep recorded ports that are ours or free; pick new ones for the rest."""
        taken: set[int] = set()
        need_component: list[str] = []
        for name in COMPONENTS:
            record = state.components.get(name)
            if record and (_is_ours(record) or _port_is_free(record.port)):
                taken.add(record.port)
            else:
                need_component.append(name)
        toxiproxy = state.components.get("toxiproxy")
        toxiproxy_alive = toxiproxy is not None and _is_ours(toxiproxy)
        need_proxy: list[str] = []
        for proxy in PROXY_UPSTREAMS:
            port = state.proxy_ports.get(proxy)
            # A live Toxiproxy holds its own listen ports, so they are not free.
            if port is not None and port not in taken and (toxiproxy_alive or _port_is_free(port)):
                taken.add(port)
            else:
                need_proxy.append(proxy)
        fresh = iter(free_ports(len(need_component) + len(need_proxy), taken))
        for name in need_component:
            state.components[name] = ComponentRecord(port=next(fresh))
        for proxy in need_proxy:
            state.proxy_ports[proxy] = next(fresh)

    # ---- up

    def up(
        self, *, engine: bool = True, timeout: float = 60.0, engine_timeout: float = 60.0
    ) -> StagingState:
        """Start whatever is not running and return the state. Safe to repeat."""
        with self._locked():
            state = self.load_state() or self._new_state()
            state.policy_path = self.policy_path
            state.engine_enabled = state.engine_enabled or engine
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            self._assign_ports(state)
            self._save(state)

            self._start_dependencies(state, time.monotonic() + timeout)
            # Both are idempotent and cheap; running them every time also repairs a
            # stack whose previous `up` stopped half-way.
            self._bootstrap_postgres(state)
            self._create_bucket(state)
            self._ensure_proxies(state)
            if engine:
                self._ensure_engine(state, engine_timeout)
            self._save(state)
            return state

    def _start_dependencies(self, state: StagingState, deadline: float) -> None:
        """Spawn every dependency (and Toxiproxy) that is not running, then wait for
        each to be ready: they start side by side."""
        # PostgreSQL last: preparing it may run initdb, which then overlaps with the
        # others' start-up.
        launchers: dict[str, Callable[[StagingState], _Launch]] = {
            "redis": self._launch_redis,
            "s3": self._launch_s3,
            "llm": self._launch_llm,
            "toxiproxy": self._launch_toxiproxy,
            "postgres": self._launch_postgres,
        }
        launches: list[_Launch] = []
        for name, prepare in launchers.items():
            if not _is_ours(state.components[name]):
                launch = prepare(state)
                self._spawn(state, launch)
                launches.append(launch)
        for launch in launches:
            self._wait_ready(state, launch.component, launch.ready, deadline)

    def _spawn(self, state: StagingState, launch: _Launch) -> None:
        log_path = state.log_path(launch.component)
        with log_path.open("ab") as log:
            log.write(f"=== {_utc_now()} starting: {' '.join(launch.argv)}\n".encode())
            log.flush()
            user = launch.run_as
            try:
                process = subprocess.Popen(
                    launch.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=launch.cwd,
                    env=launch.env,
                    # Its own session and process group: not hit by the terminal's
                    # Ctrl-C, and stopped as a whole by `down`.
                    start_new_session=True,
                    user=user.pw_uid if user else None,
                    group=user.pw_gid if user else None,
                    extra_groups=[] if user else None,
                )
            except OSError as exc:
                raise StagingError(f"cannot start {launch.component}: {exc}") from exc
        _children[process.pid] = process
        record = state.components[launch.component]
        record.pid = process.pid
        record.start_ticks = process_start_ticks(process.pid)
        record.cmdline = launch.argv
        record.started_at = _utc_now()
        self._save(state)

    def _wait_ready(
        self, state: StagingState, component: str, ready: Callable[[], bool], deadline: float
    ) -> None:
        record = state.components[component]
        while True:
            if ready():
                return
            if not _is_ours(record):
                raise StagingError(
                    f"{component} exited while starting; end of {state.log_path(component)}:\n"
                    + _tail(state.log_path(component))
                )
            if time.monotonic() >= deadline:
                # Not left running: the next `up` would take it for a healthy one.
                _stop_process(component, record)
                raise StagingError(
                    f"{component} was not ready in time; end of {state.log_path(component)}:\n"
                    + _tail(state.log_path(component))
                )
            time.sleep(_POLL_S)

    # ---- PostgreSQL

    def _launch_postgres(self, state: StagingState) -> _Launch:
        bin_dir = find_postgres_bin()
        run_as = _system_user(self.system_user) if os.geteuid() == 0 else None
        data_dir = self._init_postgres(bin_dir, run_as, state.log_path("postgres"))
        port = state.components["postgres"].port
        argv = [
            str(bin_dir / "postgres"),
            "-D", str(data_dir),
            "-c", f"listen_addresses={HOST}",
            "-c", f"port={port}",
            # TCP only: no socket directory to create or share.
            "-c", "unix_socket_directories=",
        ]  # fmt: skip
        pg_isready = bin_dir / "pg_isready"

        def ready() -> bool:
            if not _tcp_accepts(port):
                return False
            if not pg_isready.is_file():
                return True
            command = [str(pg_isready), "-q", "-h", HOST, "-p", str(port), "-t", "2"]
            return subprocess.run(command, timeout=5, check=False).returncode == 0

        return _Launch("postgres", argv, ready, run_as=run_as)

    def _init_postgres(
        self, bin_dir: Path, run_as: pwd.struct_passwd | None, log_path: Path
    ) -> Path:
        """Create the cluster once (initdb); later calls find it and return at once."""
        pg_dir = self.postgres_dir
        data_dir = pg_dir / "data"
        if (data_dir / "PG_VERSION").is_file():
            return data_dir
        if run_as is not None:
            self._check_reachable(run_as)
        pg_dir.mkdir(mode=0o700, exist_ok=True)
        if data_dir.exists():
            # An initdb that was interrupted: start over.
            shutil.rmtree(data_dir)
        password_file = pg_dir / "superuser-password"
        password_file.write_text(secrets.token_urlsafe(24) + "\n")
        password_file.chmod(0o600)
        if run_as is not None:
            for path in (pg_dir, password_file):
                os.chown(path, run_as.pw_uid, run_as.pw_gid)
        command = [
            str(bin_dir / "initdb"),
            "-D", str(data_dir),
            "-U", "postgres",
            f"--pwfile={password_file}",
            "--auth-host=scram-sha-256",
            "--auth-local=peer",
            "--encoding=UTF8",
            "--no-locale",
            # The stack is disposable: skip initdb's final fsync.
            "--no-sync",
        ]  # fmt: skip
        with log_path.open("ab") as log:
            log.write(f"=== {_utc_now()} initdb\n".encode())
            log.flush()
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=run_as.pw_uid if run_as else None,
                group=run_as.pw_gid if run_as else None,
                extra_groups=[] if run_as else None,
                timeout=180,
                check=False,
            )
        if result.returncode != 0:
            raise StagingError(f"initdb failed; end of {log_path}:\n{_tail(log_path)}")
        return data_dir

    def _check_reachable(self, run_as: pwd.struct_passwd) -> None:
        """The unprivileged user must be able to pass through the state folder."""

        def user_can_enter() -> bool:
            probe = subprocess.run(
                ["test", "-x", str(self.state_dir)],
                user=run_as.pw_uid,
                group=run_as.pw_gid,
                extra_groups=[],
                timeout=10,
                check=False,
            )
            return probe.returncode == 0

        if user_can_enter():
            return
        # A private folder (mkdtemp makes them 0700): let others pass through it, no
        # more; staging.json stays readable by its owner only.
        mode = self.state_dir.stat().st_mode
        self.state_dir.chmod((mode & 0o7777) | 0o001)
        if not user_can_enter():
            raise StagingError(
                f"PostgreSQL runs as user {run_as.pw_name}, who cannot reach {self.state_dir}: "
                "choose a state folder whose parents all let others pass (o+x)"
            )

    def _bootstrap_postgres(self, state: StagingState) -> None:
        """Create the `reslab` role and database if missing (idempotent)."""
        bin_dir = find_postgres_bin()
        psql = bin_dir / "psql" if (bin_dir / "psql").is_file() else shutil.which("psql")
        if psql is None:
            raise StagingError("psql not found (Debian package postgresql-client)")
        password = (self.postgres_dir / "superuser-password").read_text().strip()
        sql = f"""
SELECT format('CREATE ROLE %I LOGIN', '{DB_USER}')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{DB_USER}') \\gexec
ALTER ROLE {DB_USER} LOGIN PASSWORD '{DB_PASSWORD}';
SELECT format('CREATE DATABASE %I OWNER %I', '{DB_NAME}', '{DB_USER}')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DB_NAME}') \\gexec
"""
        command = [
            str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1",
            "-h", HOST, "-p", str(state.components["postgres"].port),
            "-U", "postgres", "-d", "postgres", "-f", "-",
        ]  # fmt: skip
        env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}
        result = subprocess.run(
            command, input=sql, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0:
            raise StagingError(f"creating the {DB_NAME} database failed: {result.stderr.strip()}")

    # ---- Redis, S3, LLM stub, Toxiproxy

    def _launch_redis(self, state: StagingState) -> _Launch:
        port = state.components["redis"].port
        work_dir = self.state_dir / "redis"
        work_dir.mkdir(exist_ok=True)
        argv = [
            find_redis_server(),
            "--bind", HOST,
            "--port", str(port),
            "--protected-mode", "yes",
            # No persistence: a restart is an empty cache, as the scenarios assume.
            "--save", "",
            "--appendonly", "no",
            "--dir", str(work_dir),
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        return _Launch("redis", argv, lambda: _redis_pong(port))

    def _launch_s3(self, state: StagingState) -> _Launch:
        port = state.components["s3"].port
        argv = [self.python, "-m", "moto.server", "-H", HOST, "-p", str(port)]
        return _Launch("s3", argv, lambda: _http_ok(http_url(HOST, port), any_status=True))

    def _create_bucket(self, state: StagingState) -> None:
        # moto keeps its data in memory: a (re)started S3 server needs the bucket again.
        url = f"{state.url('s3')}/{S3_BUCKET}"
        try:
            response = httpx.put(url, timeout=10.0)
        except httpx.HTTPError as exc:
            raise StagingError(f"creating bucket {S3_BUCKET} failed: {exc}") from exc
        if response.status_code not in (200, 409):
            raise StagingError(
                f"creating bucket {S3_BUCKET} failed: HTTP {response.status_code} {response.text}"
            )

    def _python_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{path}" if path else str(REPO_ROOT)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra or {})
        return env

    def _launch_llm(self, state: StagingState) -> _Launch:
        port = state.components["llm"].port
        argv = [
            self.python, "-m", "engine.service.llm_stub",
            "--host", HOST,
            "--port", str(port),
            "--latency-median-ms", str(self.llm_latency_median_ms),
            "--latency-sigma", str(self.llm_latency_sigma),
            "--seed", str(self.llm_seed),
        ]  # fmt: skip
        # The key goes by environment, not argv, so that `ps` does not show it.
        env = self._python_env({"RESLAB_LLM_STUB_API_KEY": state.llm_api_key})
        return _Launch(
            "llm", argv, lambda: _http_ok(f"{http_url(HOST, port)}/health"), env=env, cwd=REPO_ROOT
        )

    def _launch_toxiproxy(self, state: StagingState) -> _Launch:
        port = state.components["toxiproxy"].port
        argv = [find_toxiproxy_server(self.python), "-host", HOST, "-port", str(port)]
        return _Launch("toxiproxy", argv, lambda: _http_ok(f"{http_url(HOST, port)}/version"))

    def _proxy_specs(self, state: StagingState) -> list[ProxySpec]:
        return [
            ProxySpec(
                name=proxy,
                listen=state.proxy_address(proxy),
                upstream=f"{HOST}:{state.components[target].port}",
            )
            for proxy, target in PROXY_UPSTREAMS.items()
        ]

    def _ensure_proxies(self, state: StagingState) -> None:
        # /populate leaves matching proxies (and their toxics) alone and replaces those
        # whose listen or upstream address changed.
        try:
            with ToxiproxyClient(state.toxiproxy_url, timeout=10.0) as client:
                client.populate(self._proxy_specs(state))
        except ToxiproxyError as exc:
            raise StagingError(f"creating the Toxiproxy proxies failed: {exc}") from exc

    # ---- engine

    def _ensure_engine(self, state: StagingState, timeout: float) -> None:
        record = state.components["engine"]
        env = state.engine_env()
        digest = hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()[:16]
        if _is_ours(record):
            if record.env_digest == digest:
                return
            _stop_process("engine", record)
        argv = [self.python, "-m", "engine.service"]
        port = record.port
        launch = _Launch(
            "engine",
            argv,
            lambda: _http_ok(f"{http_url(HOST, port)}/health"),
            env=self._python_env(env),
            cwd=REPO_ROOT,
        )
        self._spawn(state, launch)
        record.env_digest = digest
        self._save(state)
        self._wait_ready(state, "engine", launch.ready, time.monotonic() + timeout)

    # ---- down

    def down(self) -> DownReport:
        """Remove the proxies and stop what this stack started. Ports, keys and
        PostgreSQL's data stay for the next `up`."""
        with self._locked():
            state = self.load_state()
            if state is None:
                return DownReport((), ())
            removed: tuple[str, ...] = ()
            toxiproxy = state.components.get("toxiproxy")
            if toxiproxy is not None and _is_ours(toxiproxy):
                removed = self._remove_proxies(state)
            stopped: list[str] = []
            for name in reversed(COMPONENTS):
                record = state.components.get(name)
                if record is None:
                    continue
                if _stop_process(name, record):
                    stopped.append(name)
                record.pid = None
                record.start_ticks = None
                record.started_at = None
                record.env_digest = None
            state.engine_enabled = False
            self._save(state)
            return DownReport(tuple(stopped), removed)

    def _remove_proxies(self, state: StagingState) -> tuple[str, ...]:
        removed: list[str] = []
        with ToxiproxyClient(state.toxiproxy_url, timeout=5.0) as client:
            for proxy in PROXY_UPSTREAMS:
                try:
                    client.delete_proxy(proxy)
                except ToxiproxyError as exc:
                    if exc.status != 404:
                        raise StagingError(f"removing proxy {proxy} failed: {exc}") from exc
                else:
                    removed.append(proxy)
        return tuple(removed)

    # ---- status

    def status(self) -> list[ComponentStatus]:
        """Each component alive, dead (started, then gone) or stopped (not started)."""
        state = self.load_state()
        statuses: list[ComponentStatus] = []
        for name in COMPONENTS:
            record = state.components.get(name) if state else None
            if state is None or record is None:
                statuses.append(ComponentStatus(name, "stopped", None, None, None, None))
                continue
            component_state: ComponentState
            if record.pid is None:
                component_state = "stopped"
            elif _is_ours(record):
                component_state = "alive"
            else:
                component_state = "dead"
            statuses.append(
                ComponentStatus(
                    name=name,
                    state=component_state,
                    pid=record.pid,
                    port=record.port,
                    url=state.url(name),
                    log=str(state.log_path(name)),
                )
            )
        return statuses

    def proxy_status(self) -> list[ProxyStatus]:
        """The four proxies as Toxiproxy reports them (absent when it is not running)."""
        state = self.load_state()
        if state is None or not state.proxy_ports:
            return []
        live: dict[str, Any] = {}
        toxiproxy = state.components.get("toxiproxy")
        if toxiproxy is not None and _is_ours(toxiproxy):
            try:
                with ToxiproxyClient(state.toxiproxy_url, timeout=5.0) as client:
                    live = dict(client.proxies())
            except ToxiproxyError:
                live = {}
        result: list[ProxyStatus] = []
        for spec in self._proxy_specs(state):
            proxy = live.get(spec.name)
            result.append(
                ProxyStatus(
                    name=spec.name,
                    listen=proxy.listen if proxy else spec.listen,
                    upstream=proxy.upstream if proxy else spec.upstream,
                    present=proxy is not None,
                    enabled=bool(proxy and proxy.enabled),
                    toxics=tuple(t.name for t in proxy.toxics) if proxy else (),
                )
            )
        return result

    def healthy(self) -> bool:
        """Every component that should run is alive."""
        state = self.load_state()
        if state is None:
            return False
        expected = set(COMPONENTS) if state.engine_enabled else set(COMPONENTS) - {"engine"}
        return all(s.alive for s in self.status() if s.name in expected)


# --------------------------------------------------------------------------- CLI


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def format_status(stack: StagingStack) -> str:
    rows: list[list[str]] = [["COMPONENT", "STATE", "PID", "URL", "LOG"]]
    for status in stack.status():
        rows.append(
            [
                status.name,
                status.state,
                str(status.pid or "-"),
                status.url or "-",
                status.log or "-",
            ]
        )
    text = _table(rows)
    proxies = stack.proxy_status()
    if proxies:
        proxy_rows: list[list[str]] = [["PROXY", "LISTEN", "UPSTREAM", "STATE", "TOXICS"]]
        for proxy in proxies:
            state = "absent" if not proxy.present else ("enabled" if proxy.enabled else "disabled")
            proxy_rows.append(
                [proxy.name, proxy.listen, proxy.upstream, state, ",".join(proxy.toxics) or "-"]
            )
        text += "\n\n" + _table(proxy_rows)
    return text


EXIT_OK = 0
EXIT_USAGE = 2
# The `reslab` convention: 3 is an infrastructure failure (or, for `status`, a stack
# that is not healthy).
EXIT_INFRASTRUCTURE = 3


def _parser() -> argparse.ArgumentParser:
    state_dir_help = "state folder (default: $RESLAB_STAGING_DIR or .staging at the repo root)"
    parser = argparse.ArgumentParser(
        prog="reslab staging", description="The local staging stack behind Toxiproxy."
    )
    parser.add_argument("--state-dir", help=state_dir_help)
    # Accepted after the sub-command too (`reslab staging up --state-dir D`); SUPPRESS
    # keeps an absent one from hiding the value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", default=argparse.SUPPRESS, help=state_dir_help)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", parents=[common], help="start what is not running")
    up.add_argument("--no-engine", action="store_true", help="start the dependencies only")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds for the dependencies")
    up.add_argument("--engine-timeout", type=float, default=60.0, help="seconds for the engine")
    up.add_argument("--llm-latency-median-ms", type=float, default=40.0)
    up.add_argument("--llm-latency-sigma", type=float, default=0.3)
    up.add_argument("--llm-seed", type=int, default=1)
    commands.add_parser(
        "down", parents=[common], help="stop what `up` started and remove the proxies"
    )
    status = commands.add_parser(
        "status", parents=[common], help="show each component (exit 3 unless all alive)"
    )
    status.add_argument("--json", action="store_true", help="print staging.json instead")
    commands.add_parser(
        "env", parents=[common], help="print the engine's environment as shell exports"
    )
    return parser


def staging_main(argv: list[str]) -> int:
    """`reslab staging up|down|status|env [--state-dir D]`. Exit codes: 0 ok, 2 usage,
    3 the stack failed to start or stop, or (`status`) is not healthy."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    options: dict[str, Any] = {}
    if args.command == "up":
        options = {
            "llm_latency_median_ms": args.llm_latency_median_ms,
            "llm_latency_sigma": args.llm_latency_sigma,
            "llm_seed": args.llm_seed,
        }
    stack = StagingStack(args.state_dir, **options)
    try:
        if args.command == "up":
            started = time.monotonic()
            stack.up(
                engine=not args.no_engine, timeout=args.timeout, engine_timeout=args.engine_timeout
            )
            print(format_status(stack))
            print(f"\nup in {time.monotonic() - started:.1f} s; state in {stack.state_file}")
            return EXIT_OK
        if args.command == "down":
            report = stack.down()
            print("proxies removed: " + (", ".join(report.proxies_removed) or "none"))
            print("stopped: " + (", ".join(report.stopped) or "nothing was running"))
            return EXIT_OK
        if args.command == "env":
            state = stack.load_state()
            if state is None:
                print(f"no staging stack in {stack.state_dir}", file=sys.stderr)
                return EXIT_INFRASTRUCTURE
            for key, value in state.engine_env().items():
                print(f"export {key}={_shell_quote(value)}")
            return EXIT_OK
        if args.json:
            state = stack.load_state()
            print(json.dumps(state.to_json() if state else {}, indent=2))
        else:
            print(format_status(stack))
        return EXIT_OK if stack.healthy() else EXIT_INFRASTRUCTURE
    except StagingError as exc:
        print(f"staging: {exc}", file=sys.stderr)
        return EXIT_INFRASTRUCTURE


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


if __name__ == "__main__":
    raise SystemExit(staging_main(sys.argv[1:]))
