"""The release is the same bytes on every machine: the visible cases computed on other CPU paths.

Each variant changes torch's floating-point path the way another machine would: a plain x86-64 CPU
(``ATEN_CPU_CAPABILITY=default``: no vector kernels), an AVX2 one (``avx2``), MKL restricted to
SSE4.2, and one thread against two. Each computes every lesson's ``visible_cases.pt`` in a fresh
process (the variables are read when torch starts); all must equal the committed release's bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autograde.lessons import LESSONS

PROJECT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "plain x86-64 (ATEN_CPU_CAPABILITY=default)": {"ATEN_CPU_CAPABILITY": "default"},
    "AVX2 (ATEN_CPU_CAPABILITY=avx2)": {"ATEN_CPU_CAPABILITY": "avx2"},
    "MKL on SSE4.2 only": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "one thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "two threads": {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
}
WRITE_CASES = """
import sys, torch
from pathlib import Path
from autograde.exercises import visible_cases_for_lesson
from autograde.lessons import LESSONS
for lesson in LESSONS:  # the same file name as the release's: torch.save writes it into the archive
    (Path(sys.argv[1]) / lesson.id).mkdir()
    torch.save(visible_cases_for_lesson(lesson.id), Path(sys.argv[1]) / lesson.id / "visible_cases.pt")
"""


@pytest.mark.parametrize("variant", VARIANTS)
def test_visible_cases_are_the_same_bytes_on_another_cpu_path(variant, tmp_path):
    env = {**os.environ, **VARIANTS[variant], "PYTHONWARNINGS": "ignore"}
    subprocess.run([sys.executable, "-c", WRITE_CASES, str(tmp_path)], env=env, check=True, cwd=PROJECT)
    differ = [lesson.id for lesson in LESSONS
              if (tmp_path / lesson.id / "visible_cases.pt").read_bytes()
              != (PROJECT / "lessons" / lesson.id / "visible_cases.pt").read_bytes()]
    assert not differ, (f"on {variant}, the visible cases of {differ} differ from the committed release: compute "
                        "what the release stores in float64 from inputs drawn in float64 (exercises/base.py)")
