"""The Toxiproxy client against a real Toxiproxy server and a real TCP echo upstream."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from chaos.staging import free_ports
from chaos.toxiproxy import (
    AsyncToxiproxyClient,
    ProxySpec,
    ToxiproxyClient,
    ToxiproxyError,
    ToxiproxyUnreachable,
)
from tests.fixtures_staging import RunningServer

pytestmark = pytest.mark.integration


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def echo_address() -> Iterator[str]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def client(toxiproxy_server: RunningServer) -> Iterator[ToxiproxyClient]:
    with ToxiproxyClient(toxiproxy_server.url, timeout=5.0) as c:
        yield c


def round_trip(port: int, payload: bytes = b"ping") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        sock.sendall(payload)
        return sock.recv(4096)


def test_version(client: ToxiproxyClient) -> None:
    assert client.version()
    assert client.is_running()


def test_create_proxy_forwards_traffic(client: ToxiproxyClient, echo_address: str) -> None:
    proxy = client.create_proxy("echo", upstream=echo_address)
    assert proxy.enabled
    assert proxy.upstream == echo_address
    # Port 0 asks the server for a free port; the answer names it.
    assert proxy.listen_host == "127.0.0.1"
    assert proxy.listen_port > 0
    assert round_trip(proxy.listen_port) == b"ping"
    assert client.get_proxy("echo") == proxy
    assert set(client.proxies()) == {"echo"}


def test_unknown_proxy_raises_404(client: ToxiproxyClient) -> None:
    with pytest.raises(ToxiproxyError) as caught:
        client.get_proxy("missing")
    assert caught.value.status == 404
    assert "proxy not found" in caught.value.body


def test_existing_proxy_raises_409(client: ToxiproxyClient, echo_address: str) -> None:
    client.create_proxy("echo", upstream=echo_address)
    with pytest.raises(ToxiproxyError) as caught:
        client.create_proxy("echo", upstream=echo_address)
    assert caught.value.status == 409
    assert "already exists" in caught.value.body


def test_add_update_remove_toxic(client: ToxiproxyClient, echo_address: str) -> None:
    proxy = client.create_proxy("echo", upstream=echo_address)
    toxic = client.add_toxic(
        "echo", "latency", stream="downstream", attributes={"latency": 300}, name="slow"
    )
    assert (toxic.name, toxic.type, toxic.stream) == ("slow", "latency", "downstream")
    assert toxic.toxicity == 1.0
    assert toxic.attributes["latency"] == 300
    assert client.toxics("echo") == [toxic]
    assert client.get_proxy("echo").toxics == (toxic,)

    started = time.monotonic()
    assert round_trip(proxy.listen_port) == b"ping"
    assert time.monotonic() - started >= 0.3

    updated = client.update_toxic("echo", "slow", attributes={"latency": 0}, toxicity=0.5)
    assert updated.attributes["latency"] == 0
    assert updated.toxicity == 0.5
    assert client.get_toxic("echo", "slow") == updated

    with pytest.raises(ToxiproxyError) as caught:
        client.add_toxic("echo", "latency", attributes={"latency": 1}, name="slow")
    assert caught.value.status == 409

    client.remove_toxic("echo", "slow")
    assert client.toxics("echo") == []
    with pytest.raises(ToxiproxyError) as caught:
        client.remove_toxic("echo", "slow")
    assert caught.value.status == 404


def test_default_toxic_name_is_type_and_stream(client: ToxiproxyClient, echo_address: str) -> None:
    client.create_proxy("echo", upstream=echo_address)
    toxic = client.add_toxic("echo", "timeout", stream="upstream", attributes={"timeout": 0})
    assert toxic.name == "timeout_upstream"


def test_invalid_toxic_raises_400(client: ToxiproxyClient, echo_address: str) -> None:
    client.create_proxy("echo", upstream=echo_address)
    with pytest.raises(ToxiproxyError) as caught:
        client.add_toxic("echo", "no_such_toxic")
    assert caught.value.status == 400


def test_bad_arguments_fail_before_any_request(client: ToxiproxyClient) -> None:
    with pytest.raises(ValueError):
        client.add_toxic("echo", "latency", toxicity=1.5)
    with pytest.raises(ValueError):
        client.add_toxic("echo", "latency", stream="sideways")  # type: ignore[arg-type]


def test_disable_and_enable_proxy(client: ToxiproxyClient, echo_address: str) -> None:
    proxy = client.create_proxy("echo", upstream=echo_address)
    assert client.disable_proxy("echo").enabled is False
    with pytest.raises(OSError):
        round_trip(proxy.listen_port)
    assert client.enable_proxy("echo").enabled is True
    assert round_trip(proxy.listen_port) == b"ping"


def test_reset_enables_proxies_and_removes_toxics(
    client: ToxiproxyClient, echo_address: str
) -> None:
    client.create_proxy("echo", upstream=echo_address)
    client.add_toxic("echo", "latency", attributes={"latency": 100})
    client.disable_proxy("echo")
    client.reset()
    proxy = client.get_proxy("echo")
    assert proxy.enabled
    assert proxy.toxics == ()


def test_populate_is_idempotent_and_replaces_changed_proxies(
    client: ToxiproxyClient, echo_address: str
) -> None:
    listen_port, other_port = free_ports(2)
    spec = ProxySpec("echo", upstream=echo_address, listen=f"127.0.0.1:{listen_port}")
    (first,) = client.populate([spec])
    client.add_toxic("echo", "latency", attributes={"latency": 10}, name="kept")
    (again,) = client.populate([spec])
    assert again.listen == first.listen
    # Unchanged proxies are left alone, toxics included.
    assert [t.name for t in client.toxics("echo")] == ["kept"]

    moved = ProxySpec("echo", upstream=f"127.0.0.1:{other_port}", listen=spec.listen)
    (replaced,) = client.populate([moved])
    assert replaced.upstream == f"127.0.0.1:{other_port}"


def test_delete_proxy(client: ToxiproxyClient, echo_address: str) -> None:
    client.create_proxy("echo", upstream=echo_address)
    client.delete_proxy("echo")
    assert client.proxies() == {}
    with pytest.raises(ToxiproxyError) as caught:
        client.delete_proxy("echo")
    assert caught.value.status == 404


def test_timeout_is_honoured(client: ToxiproxyClient, toxiproxy_server: RunningServer) -> None:
    # Put Toxiproxy's own API behind one of its proxies and hold every answer.
    api = client.create_proxy("api", upstream=f"127.0.0.1:{toxiproxy_server.port}")
    client.add_toxic("api", "timeout", stream="downstream", attributes={"timeout": 0})
    started = time.monotonic()
    with (
        ToxiproxyClient(f"http://127.0.0.1:{api.listen_port}", timeout=0.5) as stalled,
        pytest.raises(ToxiproxyUnreachable) as caught,
    ):
        stalled.version()
    assert time.monotonic() - started < 5.0
    assert caught.value.status is None
    assert isinstance(caught.value, ToxiproxyError)


def test_refused_connection_raises_unreachable() -> None:
    (port,) = free_ports(1)
    with ToxiproxyClient(f"http://127.0.0.1:{port}", timeout=1.0) as nowhere:
        with pytest.raises(ToxiproxyUnreachable):
            nowhere.reset()
        assert nowhere.is_running() is False


async def test_async_client(toxiproxy_server: RunningServer, echo_address: str) -> None:
    async with AsyncToxiproxyClient(toxiproxy_server.url, timeout=5.0) as aclient:
        assert await aclient.version()
        proxy = await aclient.create_proxy("echo", upstream=echo_address)
        await aclient.add_toxic("echo", "latency", attributes={"latency": 50}, name="slow")
        patched = await aclient.update_toxic("echo", "slow", attributes={"jitter": 5})
        assert patched.attributes == {"latency": 50, "jitter": 5}
        assert (await aclient.disable_proxy("echo")).enabled is False
        await aclient.reset()
        assert (await aclient.get_proxy("echo")).toxics == ()
        assert proxy.listen_port > 0
        with pytest.raises(ToxiproxyError) as caught:
            await aclient.get_proxy("missing")
        assert caught.value.status == 404
