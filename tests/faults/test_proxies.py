"""Egress through proxies (spec §17): the API and token calls through ``OPTIMUM_PROXY_URL`` to a sandbox served
over TLS by a CA only ``OPTIMUM_CA_BUNDLE`` trusts, the callbacks through ``BRIDGE_CALLBACK_PROXY_URL``, and
no ``HTTPS_PROXY`` obeyed. The proxies are ``tests.support.forward_proxy``'s, on loopback, logging each request.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
import trustme

from optimum_bridge import BridgeClient
from optimum_bridge.devstack import CallbackReceiver
from optimum_bridge.process import egress
from optimum_bridge.sandbox import SandboxConfig, SandboxServer
from tests.support import CALLBACK_SECRET, bridge_env, run, settings_from, wait_until
from tests.support.forward_proxy import ForwardProxy


@pytest.fixture
def proxies() -> Iterator[dict[str, ForwardProxy]]:
    made = {name: ForwardProxy() for name in ("api", "callbacks", "trap")}
    yield made
    for proxy in made.values():
        proxy.close()


def test_calls_go_through_the_proxy_to_a_tls_api_the_ca_bundle_trusts(tmp_path, redis_server, prefix, workers, proxies):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {name: str(tmp_path / f"{name}.pem") for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(paths["ca"])
    cert.cert_chain_pems[0].write_to_path(paths["cert"])
    cert.private_key_pem.write_to_path(paths["key"])
    trap = proxies["trap"].url  # what no environment variable may redirect the secret to
    with (
        SandboxServer(SandboxConfig(quota=None), tls=(paths["cert"], paths["key"])) as sb,
        CallbackReceiver(CALLBACK_SECRET) as receiver,
    ):
        token_url = f"https://localhost:{sb.port}/connect/token"  # another name: its own CONNECT in the log
        env = bridge_env(
            redis_server.url,
            prefix,
            sb,
            OPTIMUM_TOKEN_URL=token_url,
            OPTIMUM_PROXY_URL=proxies["api"].url,
            OPTIMUM_CA_BUNDLE=paths["ca"],
            BRIDGE_CALLBACK_PROXY_URL=proxies["callbacks"].url,
        )
        without_ca = settings_from({k: v for k, v in env.items() if k != "OPTIMUM_CA_BUNDLE"})
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"), egress.api_http(without_ca) as http:
            http.get(sb.url + "/Vehicles")
        workers({**env, "HTTPS_PROXY": trap, "HTTP_PROXY": trap, "ALL_PROXY": trap}, concurrency=2)
        client = BridgeClient(settings_from(env))
        job_id = client.submit({"method": "GET", "path": "/Vehicles", "callback": {"url": receiver.url}})
        assert client.wait(job_id, timeout=30).status == "succeeded"
        [event] = wait_until(lambda: receiver.received, what="the callback")
        proxies["api"].close()  # cut the tunnels: the TLS server then closes its side before it stops
        wait_until(lambda: sb.open_connections() == 0, what="the sandbox's connections to close")
    assert event.payload["data"]["id"] == job_id  # signature verified by the receiver
    print(f"\napi proxy: {proxies['api'].log}\ncallback proxy: {proxies['callbacks'].log}")
    assert f"CONNECT localhost:{sb.port} HTTP/1.1" in proxies["api"].log  # the token
    assert f"CONNECT 127.0.0.1:{sb.port} HTTP/1.1" in proxies["api"].log  # the API
    assert proxies["callbacks"].log == [f"POST {receiver.url} HTTP/1.1"]
    assert proxies["trap"].log == []
    assert [e["path"] for e in sb.stats()["log"]] == ["/Vehicles"]


def test_a_callback_through_the_proxy_is_still_refused_when_its_name_resolves_inside(bridge, monkeypatch, proxies):
    proxy = proxies["callbacks"]
    with CallbackReceiver(CALLBACK_SECRET) as receiver:
        port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
        proxy.hosts["hooks.example.com"] = ("127.0.0.1", port)  # the proxy's own DNS reaches the receiver
        answers = {"hooks.example.com": "93.184.216.34"}  # what the bridge's DNS says: public, for now
        real = socket.getaddrinfo

        def getaddrinfo(host, port, *args, **kwargs):  # DNS is the edge that cannot run here
            if host in answers:
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]
            return real(host, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        rt, client, _ = bridge(BRIDGE_CALLBACK_ALLOW_PRIVATE="false", BRIDGE_CALLBACK_PROXY_URL=proxy.url)
        hook = {"url": f"http://hooks.example.com:{port}/hook"}
        public, private = (
            client.submit({"method": "GET", "path": path, "callback": hook}) for path in ("/Vehicles", "/Persons")
        )
        # The worker process that runs a job delivers its callback at once (issue 17), checking the URL first.
        assert run(rt, public) == "succeeded"
        wait_until(lambda: len(receiver.received) == 1, what="the callback through the proxy")
        assert proxy.log == [f"POST http://hooks.example.com:{port}/hook HTTP/1.1"]  # by name, checked first

        answers["hooks.example.com"] = "10.0.0.7"  # the name now points inside the network
        assert run(rt, private) == "succeeded"
        wait_until(lambda: len(rt.deliveries.dead_letters()) == 1, what="the refused callback's dead letter")
    assert len(proxy.log) == 1  # the proxy was never asked
    [letter] = rt.deliveries.dead_letters()
    assert letter["job_id"] == private and "internal address" in str(letter["reason"])
