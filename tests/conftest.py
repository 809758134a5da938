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


@pytest.fixture(scope="session")
def _backend_cache(tmp_path_factory):
    """One converted-network cache for the session (content-addressed, so sharing it cannot mix models up)."""
    return tmp_path_factory.mktemp("backend_cache")


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch, _backend_cache):
    """Private model store per test, a session-wide backend cache and a loopback-only network."""
    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(tmp_path_factory.mktemp("rootlets_home")))
    monkeypatch.setenv("ROOTLETS_TASK_CACHE", str(_backend_cache))
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)
