"""Which addresses MCP servers may have: public ones, and those of networks the operator allows."""

from __future__ import annotations

import pytest

from mnemo_core.errors import InvalidArgument
from mnemo_tools.mcp_addresses import REFUSED_URL, AddressPolicy
from mnemo_tools.sandbox.cgroups import own_cgroup


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "0.0.0.0",
        "10.1.2.3",
        "172.31.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "224.0.0.251",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2002:7f00:1::",
        "not-an-address",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not AddressPolicy().allows(address)


@pytest.mark.parametrize("address", ["1.1.1.1", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert AddressPolicy().allows(address)


def test_an_allowed_network_admits_its_addresses_only() -> None:
    policy = AddressPolicy(["10.20.0.0/16", "127.0.0.1/32"])

    assert policy.allows("10.20.3.4")
    assert policy.allows("127.0.0.1")
    assert not policy.allows("10.21.0.1")
    assert not policy.allows("127.0.0.2")


async def test_hosts_that_resolve_to_loopback_or_not_at_all_get_one_message() -> None:
    policy = AddressPolicy()
    messages = []
    for url in ("http://localhost/mcp", "http://no-such-host.invalid/", "gopher://1.1.1.1/", "http:///x"):
        with pytest.raises(InvalidArgument) as refused:
            await policy.check_url(url, "url")
        messages.append(refused.value.violations[0].description)

    assert messages == [REFUSED_URL] * 4
    await policy.check_url("https://1.1.1.1/mcp", "url")


def test_the_cgroup_v2_path_is_read_from_proc_self_cgroup() -> None:
    hybrid = "12:pids:/user.slice\n1:name=systemd:/user.slice/x.scope\n0::/user.slice/x.scope\n"

    assert own_cgroup(hybrid) == "/user.slice/x.scope"
    assert own_cgroup("0::/\n") == "/"
    assert own_cgroup("4:memory:/docker/abc\n") is None
