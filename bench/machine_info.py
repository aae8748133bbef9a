"""The machine every bench table and JSON names beside its figures: cores, CPU model, GPU, torch threads, load."""
from __future__ import annotations

import os
import platform


def machine_info() -> dict:
    """``{cores, cpu, gpu, torch_threads, load_avg_1m}`` of this machine (torch optional). The load average is
    the one at the call: call it before the measured work to record how idle the machine was."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu, threads = "no GPU", None
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        threads = torch.get_num_threads()
    except ImportError:
        pass
    return {"cores": os.cpu_count(), "cpu": cpu, "gpu": gpu, "torch_threads": threads,
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def machine() -> str:
    """One line: ``2 cores, Intel Xeon ..., no GPU, torch 2 threads, load 0.31``."""
    m = machine_info()
    threads = f", torch {m['torch_threads']} threads" if m["torch_threads"] else ""
    return f"{m['cores']} cores, {m['cpu']}, {m['gpu']}{threads}, load {m['load_avg_1m']}"
