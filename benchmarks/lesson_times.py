"""Execute every solution notebook top to bottom (hidden tests included) and print the README's lesson table.

    python benchmarks/lesson_times.py [--repeat N]

Each notebook runs in a fresh kernel in a materialised course folder (the notebook and its
visible_cases.pt), as the autograder runs it; the time includes starting the kernel. With
--repeat N the median of N runs is printed.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient

from autograde.course import materialise_source, project_root
from autograde.lessons import LESSONS


def run_once(folder: Path, notebook: str) -> float:
    nb = nbformat.read(folder / f"{notebook}.ipynb", as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    project = project_root()
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}")
    print("| lesson | exercises | points | runs in |\n| --- | --- | --- | --- |")
    for lesson in LESSONS:
        with tempfile.TemporaryDirectory() as tmp:
            folder = materialise_source(project, lesson, Path(tmp))
            nb = nbformat.read(folder / f"{lesson.notebook}.ipynb", as_version=4)
            meta = [c.metadata.get("nbgrader", {}) for c in nb.cells]
            exercises = sum(1 for m in meta if m.get("solution"))
            points = sum(m.get("points", 0) for m in meta if m.get("grade"))
            seconds = statistics.median(run_once(folder, lesson.notebook) for _ in range(args.repeat))
        print(f"| {lesson.title} | {exercises} | {points:g} | {seconds:.1f} s |")


if __name__ == "__main__":
    main()
