"""Which IP addresses a fetch may connect to: the guard against server-side request forgery.

A feed URL is the user's (or a redirect's) choice, so without this a feed could make digest
read the machine's own services or the LAN. Checked at connect time for every hop and every
address a name resolves to; fetch.allow_private_networks and fetch.allowed_networks open it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL


class AddressRefused(Exception):
    """A connection the policy forbids, worded for the user."""


@dataclass(frozen=True)
class AddressPolicy:
    """Which IP addresses a fetch may connect to (the SSRF guard)."""

    allow_private: bool
    allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def check(self, host: str, address: str) -> None:
        if self.allow_private:
            return
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if _is_public(ip) or any(ip in net for net in self.allowed):
            return
        who = f"{address} is" if host == address else f"{host} resolves to {address},"
        raise AddressRefused(
            f"refused: {who} a {_address_kind(ip)} address "
            "(set fetch.allow_private_networks to allow)"
        )

    def check_literal(self, url: URL) -> None:
        """aiohttp skips the resolver for IP literals, so check those before connecting."""
        if self.allow_private:
            return
        host = url.host or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return
        self.check(host, host)


class CheckingResolver(AbstractResolver):
    """Resolves as usual, then refuses addresses the policy forbids: checked at connect time
    for every hop, so DNS answers that change between hops cannot slip through."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        for result in results:
            self._policy.check(host, result["host"])
        return results

    async def close(self) -> None:
        await self._resolver.close()


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # is_global alone lets multicast and some reserved ranges (NAT64) through.
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def _address_kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    # Most specific first: loopback and link-local addresses are also "private".
    kinds = [
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
    ]
    return next((name for matches, name in kinds if matches), "non-public")
