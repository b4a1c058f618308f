"""What CPU this is: the instruction-set facts INT8 kernels depend on, and a readable name.

Standard library only: `edgefashion bench` reports it on a Raspberry Pi without torch, and export's
quantization (training/quantize.py) chooses its settings from the same facts.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def detect_cpu(cpuinfo: str | None = None, machine: str | None = None) -> dict:
    """ISA facts that matter for INT8 kernels, from /proc/cpuinfo's flags (Linux) and the machine type.
    `cpuinfo`/`machine` can be passed to describe another CPU (tests, or choosing for a target device)."""
    machine = (machine or platform.machine() or "").lower()
    if cpuinfo is None:
        cpuinfo = _read_cpuinfo()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        # x86 calls the list "flags", ARM Linux calls it "Features".
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    arm = machine in ("aarch64", "arm64") or machine.startswith("arm")
    return {
        "machine": machine,
        "arm": arm,
        "neon": arm and (machine in ("aarch64", "arm64") or "neon" in flags or "asimd" in flags),
        "avx2": "avx2" in flags,
        "avx512": "avx512f" in flags and "avx512bw" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "avx_vnni": "avx_vnni" in flags,
        "known": bool(flags) or arm,
    }


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's marketing name: x86 "model name"; on a Raspberry Pi the board ("Model") is more telling
    than ARM's numeric part ids, so it wins when present."""
    if cpuinfo is None:
        cpuinfo = _read_cpuinfo()
    found: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if value and key in ("model name", "model", "hardware", "cpu model") and key not in found:
            found[key] = value
    for key in ("model", "model name", "cpu model", "hardware"):
        # x86's "model" is a bare number; only a named one (the Pi's board) is worth reporting.
        if key in found and not (key == "model" and found[key].isdigit()):
            return found[key]
    return platform.processor() or platform.machine() or "unknown"


def isa_names(cpu: dict) -> list[str]:
    """detect_cpu()'s facts as the names people search for: AVX2, AVX-512, VNNI, NEON."""
    names = [n for n, k in (("AVX2", "avx2"), ("AVX-512", "avx512"), ("NEON", "neon")) if cpu.get(k)]
    if cpu.get("avx512_vnni"):
        names.append("AVX-512 VNNI")
    if cpu.get("avx_vnni"):
        names.append("AVX-VNNI")
    return names


def cpu_info() -> dict:
    """Everything bench reports about the CPU: model, cores, ISA names and the raw facts."""
    cpu = detect_cpu()
    return {"model": cpu_model(), "machine": cpu["machine"], "cores": os.cpu_count(), "isa": isa_names(cpu),
            "features": cpu}
