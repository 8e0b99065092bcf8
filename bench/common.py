"""Shared parts of the benchmarks: the machine description and the report page."""

from __future__ import annotations

import datetime
import os
import platform
import re
from pathlib import Path

import torch

REPORT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

_HEADER = """# Benchmarks

Each section is written by one script in `bench/`; run it again to refresh the section.
Figures come from one run on the machine named in the section. Where a section gives a
ratio, both sides were measured in the same run, alternating, because the machine is
shared and absolute rates drift.
"""


def machine() -> str:
    """Describe the CPU, core count, torch version and date of this run in one line."""
    model = platform.processor() or "unknown CPU"
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"model name\s*:\s*(.+)", text)
        if match:
            model = match.group(1).strip()
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    today = datetime.date.today().isoformat()
    return f"{model}, {cores} cores, torch {torch.__version__}, {today}"


def write_section(name: str, body: str) -> Path:
    """Replace the section between ``<!-- bench:NAME -->`` markers in docs/benchmarks.md."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    text = REPORT.read_text() if REPORT.exists() else _HEADER
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        before = text[: text.index(start)]
        after = text[text.index(end) + len(end) :]
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    REPORT.write_text(text)
    return REPORT
