"""Helpers shared by the tests (model builders, stand-in tools, a browser driver); fixtures live in conftest.py."""
