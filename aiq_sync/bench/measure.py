"""Measure a child process: wall time, CPU time and peak RSS, the way every contender of the
benchmark is measured (its own process, so the peak is its own)."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Measured:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    exit_code: int
    peak_during: str = ""  # the child's last output line when its RSS peaked (sampled)


def measure(cmd: list[str], env: dict[str, str], log: Path) -> Measured:
    """Run `cmd` as a child and take its wall time, CPU time and peak RSS (ru_maxrss of the
    reaped child: its own high-water mark, not this process's). RSS is also sampled from
    /proc to tell which step (the last line it printed) the peak came in."""
    with log.open("w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        sampler = threading.Thread(target=_sample_peak, args=(process, log, peak := {}))
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        sampler.join()
    process.returncode = code = os.waitstatus_to_exitcode(status)
    return Measured(
        wall_s=round(wall, 2),
        cpu_s=round(usage.ru_utime + usage.ru_stime, 2),
        peak_rss_mb=round(usage.ru_maxrss / 1024, 1),  # KiB on Linux
        exit_code=code,
        peak_during=peak.get("line", ""),
    )


def _sample_peak(process: subprocess.Popen[bytes], log: Path, peak: dict[str, Any]) -> None:
    status = Path(f"/proc/{process.pid}/status")
    top = 0
    while process.returncode is None:
        try:
            text = status.read_text()
        except OSError:  # gone (or no /proc)
            return
        match = re.search(r"VmRSS:\s+(\d+)", text)
        if match is None:  # a zombie: exited, not reaped yet
            return
        if int(match.group(1)) > top:
            top = int(match.group(1))
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            peak["line"] = lines[-1][:160] if lines else "(start-up)"
        time.sleep(0.25)
