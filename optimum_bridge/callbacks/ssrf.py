"""Where callbacks may go: no loopback, private, link-local, CGNAT, multicast or
metadata addresses (IPv4 and IPv6, IPv4-mapped and legacy decimal/octal/hex
IPv4 forms included) unless ``BRIDGE_CALLBACK_ALLOW_PRIVATE`` is set.

Checked at submission and again at delivery, where the address that was
checked is the one connected to (``resolve_pinned``), so a DNS answer that
changes in between cannot aim a callback inside the network.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from optimum_bridge.errors import CallbackURLRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


@dataclass(frozen=True)
class Target:
    """A checked callback URL and the address to connect to (None: allow-private mode)."""

    url: str
    host: str
    address: str | None


def literal_address(host: str) -> IPAddress | None:
    """The IP a host string denotes, including forms like ``2130706433`` or ``0177.1``."""
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if bare and all(part.isalnum() for part in bare.split(".")) and bare.replace(".", "").isalnum():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(bare))  # legacy decimal/octal/hex forms
        except OSError:
            return None
    return None


def is_forbidden(address: IPAddress) -> bool:
    """Whether a callback must not be sent to ``address``."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if mapped is not None:
            return is_forbidden(mapped)
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return True
    return not address.is_global or address.is_multicast or address.is_reserved or address.is_unspecified


def _split(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise CallbackURLRefused("callback.url: only http and https are allowed")
    if parts.username or parts.password:
        raise CallbackURLRefused("callback.url: must not carry credentials")
    if not parts.hostname:
        raise CallbackURLRefused("callback.url: has no host")
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def resolve_pinned(url: str, *, allow_private: bool) -> Target:
    """Check ``url`` and pick the one address to connect to; refuses forbidden ones."""
    _, host, port = _split(url)
    if allow_private:
        return Target(url, host, None)
    literal = literal_address(host)
    if literal is not None:
        candidates: list[IPAddress] = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise CallbackURLRefused(f"callback.url: host {host!r} does not resolve") from None
        candidates = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    bad = [str(a) for a in candidates if is_forbidden(a)]
    if bad or not candidates:
        raise CallbackURLRefused(
            f"callback.url: {host!r} is a loopback, private, link-local or otherwise internal address "
            "(set BRIDGE_CALLBACK_ALLOW_PRIVATE=true for local stacks)"
        )
    return Target(url, host, str(candidates[0]))


def check_callback_url(url: str, *, allow_private: bool) -> None:
    """Raise ``CallbackURLRefused`` naming ``callback.url`` if it may not be used."""
    resolve_pinned(url, allow_private=allow_private)
