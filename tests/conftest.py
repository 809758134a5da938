"""Shared fixtures. Every test runs with its own model store and cannot reach any address outside loopback."""

from __future__ import annotations

import ipaddress
import socket

import pytest

_real_connect = socket.socket.connect


def _loopback_only(sock, address):
    host = address[0] if isinstance(address, tuple) else None
    if host is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            ok = ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = host == "localhost"
        if not ok:
            raise ConnectionRefusedError(f"tests may only reach loopback, not {host}")
    return _real_connect(sock, address)


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """Private model store per test and a loopback-only network."""
    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(tmp_path_factory.mktemp("rootlets_home")))
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)
