"""May this server call that webhook URL? The SSRF guard, asked twice.

A webhook URL is the user's, and the request comes from inside the deployment: without a
guard, ``https://169.254.169.254/`` or ``http://redis:6379/`` would have the service call
its own cloud metadata or its neighbours. So the host is resolved and every address it
resolves to must be a public one: no loopback, private, link-local (the metadata address
169.254.169.254 among them), shared (100.64/10), multicast, reserved or unspecified
address, IPv4 inside IPv6 included, and none of the cloud metadata addresses that are
public ones. Plain http is refused unless the operator allows it.

Asked at submit (a 422 naming ``webhook``) and again by each delivery attempt, whose
connection then goes to the very addresses checked here (:attr:`Target.addresses`, in the
resolver's order; the Host header and TLS name stay the URL's): a name that resolved to a
public address at submit and to 127.0.0.1 at delivery (DNS rebinding) is refused then, and
cannot switch between the check and the connect. ``STYLEQUEUE_WEBHOOK_ALLOW_PRIVATE=true``
lifts the address rule (the tests' loopback receiver, ``make run``), except for the cloud
metadata addresses, which no webhook may reach; ``STYLEQUEUE_WEBHOOK_ALLOW_HTTP=true`` the
https rule.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from stylequeue.shared.settings import WebhookSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Metadata services on addresses the rules below would let through (or might, one day):
# AWS/GCP/Azure/OpenStack 169.254.169.254 is link-local already; these are not all.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean
        "169.254.170.2",  # AWS ECS task metadata
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure's wire server (a public address)
        "fd00:ec2::254",  # AWS over IPv6
    )
)


class TargetRefused(ValueError):
    """This server will not call the URL; ``reason`` says why, for the caller."""

    def __init__(self, reason: str, *, temporary: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        # True when asking again later may succeed (the name does not resolve now)
        self.temporary = temporary


@dataclass(frozen=True)
class Target:
    """A checked URL: the address to connect to and what to say there."""

    url: str
    scheme: str  # "https" or "http"
    host: str  # the URL's host name, for the Host header and TLS
    port: int
    path: str  # path and query, at least "/"
    addresses: tuple[str, ...]  # the checked IP addresses the connection may go to

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def metadata_refusal(address: IPAddress) -> str | None:
    """Why ``address`` is refused even where private receivers are allowed: a cloud
    metadata service (the instance's credentials)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    return None


def refusal(address: IPAddress) -> str | None:
    """Why a connection to ``address`` is refused, or None for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            inner = refusal(embedded)
            return f"{inner} (inside {address})" if inner else None
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    for kind, flag in (
        ("an unspecified", address.is_unspecified),
        ("a loopback", address.is_loopback),
        ("a link-local", address.is_link_local),
        ("a private", address.is_private),
        ("a multicast", address.is_multicast),
        ("a reserved", address.is_reserved),
    ):
        if flag:
            return f"{address} is {kind} address"
    if not address.is_global:  # shared address space (100.64/10), documentation, ...
        return f"{address} is not a public address"
    return None


def split(url: str, settings: WebhookSettings) -> SplitResult:
    """The URL's parts, once its scheme is one this server calls."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "http" and not settings.allow_http:
        raise TargetRefused("must be an https URL on this server")
    if scheme not in ("https", "http") or not parts.hostname:
        raise TargetRefused("must be an http(s) URL with a host")
    return parts


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to now (an IP literal resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"the host {host!r} does not resolve: {exc}", temporary=True) from None
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])  # drop a scope id
        if address not in found:
            found.append(address)
    if not found:
        raise TargetRefused(f"the host {host!r} has no address", temporary=True)
    return found


def check_target(url: str, settings: WebhookSettings) -> Target:
    """The URL checked against this server's rules, with the address to connect to; raises
    :class:`TargetRefused`. Every address the host resolves to must pass, so a name that
    also points inside cannot be used half of the time."""
    parts = split(url, settings)
    scheme = parts.scheme.lower()
    host = str(parts.hostname)
    port = parts.port or (443 if scheme == "https" else 80)
    addresses = resolve(host, port)
    for address in addresses:
        reason = metadata_refusal(address) if settings.allow_private else refusal(address)
        if reason is not None:
            raise TargetRefused(f"the host {host!r} resolves to {reason}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(url, scheme, host, port, path, tuple(str(a) for a in addresses))
