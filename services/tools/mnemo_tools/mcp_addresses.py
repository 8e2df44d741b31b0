"""Which addresses the tools service may connect to for streamable HTTP MCP servers.

A server's URL must resolve to public addresses: loopback, private, link-local, shared, multicast and
reserved ranges are refused unless the operator allows their network (`mcp_http_allowed_networks`), at
registration and again on every connection (mcp_http.py connects to the very address checked).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from mnemo_core.errors import InvalidArgument

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# One message for every refused URL: which check failed (no such host, a private address, ...) would
# tell a caller about the service's network.
REFUSED_URL = (
    "must be an http:// or https:// URL whose host resolves to public addresses only (loopback, "
    "private and link-local addresses are refused unless the operator allows their network in "
    "mcp_http_allowed_networks)"
)


class AddressPolicy:
    """Which addresses the tools service may connect to for MCP servers."""

    def __init__(self, allowed_networks: Sequence[str] = ()) -> None:
        self._allowed: list[Network] = [ipaddress.ip_network(n, strict=False) for n in allowed_networks]

    def allows(self, text: str) -> bool:
        """Whether the address is public (or in an allowed network)."""
        try:
            address: Address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address):
            embedded = (
                address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
            )
            if embedded is not None:
                address = embedded
        if any(address in network for network in self._allowed):
            return True
        return address.is_global and not address.is_multicast

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of `host`, all of them allowed; empty when any is not (or none resolves)."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return []
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses or not all(self.allows(address) for address in addresses):
            return []
        return addresses

    async def check_url(self, url: str, field: str) -> None:
        """INVALID_ARGUMENT (one message for every reason) unless the URL may be connected to."""
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            host = parts.hostname
        except ValueError:
            host = None
        if parts.scheme not in ("http", "https") or not host or not await self.resolve(host, port):
            raise InvalidArgument(f"{field} {REFUSED_URL}", reason="MCP_URL_NOT_ALLOWED").with_violation(
                field, REFUSED_URL
            )
