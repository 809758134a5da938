"""This CPU and the OpenVINO runtime on it: the model name and instruction-set flags that decide which precision a
network can run in, whether bfloat16 runs natively (the ``bf16`` precision needs it), and OpenVINO's usage
telemetry turned off before OpenVINO or NNCF is imported.

OpenVINO runs a float32 network in bfloat16 by default on CPUs with ``avx512_bf16`` or AMX (Intel Sapphire Rapids
and later, AMD Zen 4 and later) unless told otherwise: :mod:`.backends` always sets its precision hint.
"""

from __future__ import annotations

import functools
import logging
import platform
import sys
from pathlib import Path

log = logging.getLogger(__name__)

# The flags that decide OpenVINO's precisions on x86-64, in the order they are shown (/proc/cpuinfo names).
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8",
             "avx512_fp16")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # either gives OpenVINO native bfloat16 arithmetic


def telemetry_off() -> None:
    """Keep OpenVINO's and NNCF's usage telemetry out of this process: no event sent, nothing written to ``~/intel``.

    Both import the ``openvino_telemetry`` package inside ``try/except ImportError`` and fall back to a stub that
    sends nothing ("openvino_telemetry package not found. No telemetry will be sent.", in NNCF and in OpenVINO's
    ``openvino.tools.ovc``); marking it unimportable here (``sys.modules`` entry None, Python's documented way to
    block an import) selects that stub. The package's own opt-out (``opt_in_out --opt_out``) writes a consent file
    into ``$HOME/intel``, which this tool must not. Has no effect once either package was imported by the caller.
    """
    if sys.modules.get("openvino_telemetry") is not None or "openvino.tools.ovc" in sys.modules:
        log.debug("OpenVINO telemetry: already imported by the caller, not turned off here")
        return
    sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # None blocks the import (documented)


telemetry_off()  # on import: every module that imports OpenVINO or NNCF imports this one first


@functools.cache
def cpu_info() -> dict:
    """``{"Model": name, "Flags": [the ISA_FLAGS this CPU has]}`` from ``/proc/cpuinfo`` (Linux; elsewhere the
    platform's processor name and no flags)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags = set(value.split())
            if flags and model:
                break
    except OSError:
        pass
    return {"Model": model, "Flags": [f for f in ISA_FLAGS if f in flags]}


@functools.cache
def openvino_capabilities() -> tuple[str, ...]:
    """What OpenVINO's CPU plugin can run here (``OPTIMIZATION_CAPABILITIES``: FP32, BF16, INT8, ...); () without it."""
    try:
        import openvino as ov
        import openvino.properties.device as device

        return tuple(ov.Core().get_property("CPU", device.capabilities))
    except Exception as exc:  # not installed or no CPU plugin: nothing runs on OpenVINO anyway
        log.debug("OpenVINO capabilities unavailable: %s", exc)
        return ()


def has_bf16() -> bool:
    """True when OpenVINO runs bfloat16 natively on this CPU (``avx512_bf16`` or AMX), which ``bf16`` needs."""
    return "BF16" in openvino_capabilities()


def describe() -> str:
    """One line for messages: the CPU model and its relevant flags, e.g. ``AMD EPYC (avx2; no AVX-512, bf16, AMX)``."""
    info = cpu_info()
    flags = info["Flags"]
    if not flags:
        return f"{info['Model']} (no AVX2, AVX-512, bf16 or AMX)"
    groups = (("AVX-512", ("avx512f",)), ("bf16", BF16_FLAGS), ("AMX", ("amx_tile",)))
    missing = [name for name, members in groups if not set(members) & set(flags)]
    return f"{info['Model']} ({' '.join(flags)}{'; no ' + ', '.join(missing) if missing else ''})"
