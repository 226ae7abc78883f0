"""The egress settings (spec §17): proxies and a CA bundle, refused in one line that names the variable and
echoes no password. Going through them, and ignoring ``HTTPS_PROXY``: ``tests/faults/test_proxies.py``."""

from __future__ import annotations

import pytest

from optimum_bridge.errors import ConfigError
from optimum_bridge.settings import load_settings

BASE = {"OPTIMUM_ENVIRONMENT": "sandbox"}


@pytest.mark.parametrize("variable", ["OPTIMUM_PROXY_URL", "BRIDGE_CALLBACK_PROXY_URL"])
def test_a_malformed_proxy_url_is_refused_without_echoing_it(variable):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, **{**BASE, variable: "socks5://user:hunter2@proxy:1080"}, _env_file=None)
    assert str(caught.value).startswith(f"{variable}: expected an http:// or https:// proxy URL")
    assert "hunter2" not in str(caught.value)


def test_a_proxy_password_stays_out_of_the_settings_repr():
    settings = load_settings(environ={}, _env_file=None, **BASE, OPTIMUM_PROXY_URL="http://user:hunter2@proxy:3128")
    assert "hunter2" not in repr(settings)
    assert settings.proxy_url is not None and settings.proxy_url.get_secret_value().endswith("@proxy:3128")


def test_a_ca_bundle_must_hold_pem_certificates(tmp_path):
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")
    for path in (bogus, tmp_path / "missing.pem"):
        with pytest.raises(ConfigError, match=r"^OPTIMUM_CA_BUNDLE: cannot read PEM certificates from "):
            load_settings(environ={}, _env_file=None, **BASE, OPTIMUM_CA_BUNDLE=str(path))
