"""Grade the same generated class with `attention-course autograde --jobs N` and with plain nbgrader.

    python benchmarks/autograde_speed.py [--per-lesson 20] [--jobs N] [--lesson ID ...]

The class: ``--per-lesson`` students for every lesson, cycling through the sample submissions of
the lesson (``full_marks``, ``blank``, ``partly_right``, ``wrong``, and Lesson 4's ``no_tiling``;
autograde/samples). Both graders start from nothing (a fresh course folder, ``generate_assignment``
included) and grade every submission; the plain one is nbgrader's own command line, ``nbgrader
autograde LESSON`` for each lesson, in a course folder with the course's nbgrader configuration
(its kernel runs every hidden test in the student's process, unsandboxed, one notebook at a time).
Prints both wall times and CPU times, their ratio, the ratio the machine's cores would allow at
most given plain nbgrader's CPU time, and whether both gave every student the same total.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autograde.course import NBGRADER_CONFIG, materialise_source, project_root
from autograde.demo import write_sample_submissions
from autograde.grade import autograde
from autograde.lessons import LESSONS


def generated_class(project: Path, dest: Path, per_lesson: int, lessons) -> Path:
    """``per_lesson`` students per lesson, ``student_00`` ..., each a copy of one of the lesson's samples
    (four in each lesson, and Lesson 4's fifth, ``no_tiling``), in turn."""
    samples = write_sample_submissions(project, project / "lessons", dest / "samples", lessons)
    for lesson in lessons:
        names = sorted(p.name for p in samples.iterdir() if (p / lesson.id).is_dir())
        for i in range(per_lesson):
            folder = dest / "class" / f"student_{i:02d}" / lesson.id
            folder.mkdir(parents=True)
            shutil.copyfile(samples / names[i % len(names)] / lesson.id / f"{lesson.notebook}.ipynb",
                            folder / f"{lesson.notebook}.ipynb")
    return dest / "class"


def plain_nbgrader(project: Path, submissions: Path, root: Path, lessons) -> dict[tuple[str, str], float]:
    """Grade with nbgrader's command line, serially; return each (student, lesson)'s total."""
    root.mkdir(parents=True)
    shutil.copyfile(project / NBGRADER_CONFIG, root / "nbgrader_config.py")
    shutil.copytree(submissions, root / "submitted")
    nbgrader = [str(Path(sys.executable).parent / "nbgrader")]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for lesson in lessons:
        materialise_source(project, lesson, root)
        subprocess.run([*nbgrader, "generate_assignment", lesson.id, "--force", "--log-level=ERROR"],
                       cwd=root, check=True, env=env)
        subprocess.run([*nbgrader, "autograde", lesson.id, "--force", "--log-level=ERROR"],
                       cwd=root, check=True, env=env)
    subprocess.run([*nbgrader, "export", "--to", "grades.csv", "--log-level=ERROR"], cwd=root, check=True, env=env)
    with open(root / "grades.csv") as f:
        return {(row["student_id"], row["assignment"]): float(row["raw_score"] or 0) for row in csv.DictReader(f)}


def cpu_seconds() -> float:
    """CPU time the whole machine has spent busy so far (Linux's /proc/stat; run it on a quiet machine).
    Not this process's rusage: a sandbox's kernel is reaped inside its own PID namespace, so its CPU
    time never reaches our children's count."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:  # not Linux: this process and the children it waited for
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    user, nice, system, irq, softirq = fields[0], fields[1], fields[2], fields[5], fields[6]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-lesson", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--lesson", action="append", help="only this lesson (repeatable)")
    args = parser.parse_args()
    project = project_root()
    lessons = tuple(l for l in LESSONS if not args.lesson or l.id in args.lesson)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{args.per_lesson} submissions x {len(lessons)} lesson(s); --jobs {args.jobs}")
    with tempfile.TemporaryDirectory(prefix="autograde-speed-") as tmp:
        submissions = generated_class(project, Path(tmp), args.per_lesson, lessons)

        start, cpu = time.perf_counter(), cpu_seconds()
        grades = autograde(project, submissions, Path(tmp) / "ours", lessons=lessons, jobs=args.jobs, progress=True)
        ours, ours_cpu = time.perf_counter() - start, cpu_seconds() - cpu
        our_totals = {key: score for key, (score, _) in grades.totals().items()}

        start, cpu = time.perf_counter(), cpu_seconds()
        plain_totals = plain_nbgrader(project, submissions, Path(tmp) / "plain", lessons)
        plain, plain_cpu = time.perf_counter() - start, cpu_seconds() - cpu

    n = args.per_lesson * len(lessons)
    print(f"attention-course autograde --jobs {args.jobs}: {ours:7.1f} s  ({ours / n:.2f} s per notebook), "
          f"{ours_cpu:.0f} CPU s ({ours_cpu / ours:.2f} cores busy on average)")
    print(f"plain nbgrader autograde (serial):   {plain:7.1f} s  ({plain / n:.2f} s per notebook), "
          f"{plain_cpu:.0f} CPU s ({plain_cpu / plain:.2f} cores busy on average)")
    print(f"speed-up: {plain / ours:.2f}x  (target: at least 2x; with all {os.cpu_count()} cores busy, plain "
          f"nbgrader's CPU time would allow at most {plain / (plain_cpu / os.cpu_count()):.2f}x)")
    differ = sorted(k for k in our_totals if abs(our_totals[k] - plain_totals.get(k, -1)) > 1e-9)
    print("same totals for every submission" if not differ else
          f"totals differ for {len(differ)} submission(s), e.g. {differ[:3]}: "
          f"ours {[our_totals[k] for k in differ[:3]]}, plain {[plain_totals.get(k) for k in differ[:3]]}")


if __name__ == "__main__":
    main()
