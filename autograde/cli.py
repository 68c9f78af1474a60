"""``attention-course``: the course's command line, for instructors and students.

    attention-course demo                          grade the bundled sample class and print its scores
    attention-course lab                           open JupyterLab on the lessons (students start here)
    attention-course validate NOTEBOOK             run a notebook's visible tests before handing it in
    attention-course release                       regenerate lessons/ from solutions/ (instructors)
    attention-course autograde SUBMISSIONS --out DIR   grade a class through nbgrader
    attention-course bench [--n N ...] [--methods ...]  time and peak memory of attention implementations
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from autograde.lessons import LESSONS, UnknownLesson, get_lesson


def _lessons(ids: list[str] | None):
    return tuple(get_lesson(i) for i in ids) if ids else LESSONS


def cmd_release(args) -> int:
    from autograde.course import project_root
    from autograde.release import release

    project = project_root()
    for folder in release(project, project / "lessons", _lessons(args.lesson)):
        print(f"released {folder.relative_to(project)}/")
    return 0


def _grade_and_report(project: Path, submissions: Path, out: Path, lessons, quiet: bool,
                      cell_timeout: int | None = None, jobs: int | None = None) -> int:
    from autograde.grade import autograde

    grades = autograde(project, submissions, out, lessons=lessons, progress=not quiet, cell_timeout=cell_timeout,
                       jobs=jobs)
    print(grades.table())
    print(f"\nScores per cell: {out / 'scores.csv'}\nGrades: {out / 'grades.csv'}\n"
          f"Feedback: {out / 'feedback'}/<student>/<lesson>/\nGradebook: {out / 'gradebook.db'}")
    return 0


def cmd_autograde(args) -> int:
    from autograde.course import project_root

    return _grade_and_report(project_root(), Path(args.submissions), Path(args.out), _lessons(args.lesson), args.quiet,
                             args.timeout, args.jobs)


def cmd_demo(args) -> int:
    from autograde.course import project_root
    from autograde.demo import write_sample_submissions

    project = project_root()
    out = Path(args.out) if args.out else project / "build" / "demo"
    lessons = _lessons(args.lesson)
    with tempfile.TemporaryDirectory(prefix="attention-demo-") as tmp:
        submissions = write_sample_submissions(project, project / "lessons", Path(tmp) / "submitted", lessons)
        students = sorted(p.name for p in submissions.iterdir())
        print(f"Grading the sample class ({', '.join(students)}) on {len(lessons)} lesson(s) through nbgrader...")
        return _grade_and_report(project, submissions, out, lessons, args.quiet, jobs=args.jobs)


def cmd_validate(args) -> int:
    from autograde.validate import validate

    result = validate(Path(args.notebook), progress=not args.quiet)
    print(result.summary())
    return 0 if result.passed else 1


def cmd_lab(args) -> int:
    from autograde.course import project_root

    lessons = project_root() / "lessons"
    command = [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={lessons}", *args.jupyter_args]
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in command:
        command.append("--allow-root")  # containers and cloud notebooks often run as root
    os.chdir(lessons)  # nbgrader's lab extensions take the working directory as the course root
    os.execv(command[0], command)
    return 0  # not reached


def cmd_bench(args) -> int:
    from autograde.bench import format_table, plot_results, run_bench

    print(f"Measuring {', '.join(args.methods)} at N = {', '.join(map(str, args.n))} ({', '.join(args.modes)}) "
          f"on {args.device}, {args.dtype}, B={args.batch}, H={args.heads}, D={args.head_dim}"
          f"{', causal' if args.causal else ''}; each measurement in a fresh process.")
    results = run_bench(args.n, args.methods, args.modes, memory_limit_gb=args.memory_limit_gb, progress=not args.quiet,
                        device=args.device, dtype=args.dtype, batch=args.batch, heads=args.heads,
                        head_dim=args.head_dim, is_causal=args.causal, repeat=args.repeat, threads=args.threads)
    print(format_table(results))
    if args.plot != "none":
        plot = Path(args.plot)
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot_results(results).savefig(plot, dpi=120)
        print(f"Plot: {plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attention-course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="grade the bundled sample class and print its score table")
    p.add_argument("--out", help="course folder to grade into (default: build/demo in the project)")
    p.add_argument("--lesson", action="append", help="only this lesson (repeatable)")
    p.add_argument("--jobs", type=int, metavar="N", help="submissions graded at once (default: one per core)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("lab", help="open JupyterLab on lessons/ (other arguments go to jupyter lab)")
    p.set_defaults(func=cmd_lab)

    p = sub.add_parser("validate", help="run a notebook's visible tests and summarise them per exercise")
    p.add_argument("notebook")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("release", help="regenerate lessons/ from solutions/ with nbgrader")
    p.add_argument("--lesson", action="append", help="only this lesson (repeatable)")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("autograde", help="grade SUBMISSIONS/<student>/<lesson>/<notebook>.ipynb into --out")
    p.add_argument("submissions")
    p.add_argument("--out", required=True, help="course folder for the gradebook, CSVs and feedback")
    p.add_argument("--lesson", action="append", help="only this lesson (repeatable)")
    p.add_argument("--timeout", type=int, metavar="SECONDS",
                   help="CPU time per notebook cell; a cell that uses more is interrupted and the rest of the "
                        "notebook still runs (default: SandboxedExecute.cell_cpu_seconds of "
                        "autograde/nbgrader_config.py)")
    p.add_argument("--jobs", type=int, metavar="N",
                   help="submissions run at once, each in its own sandbox (default: one per core)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_autograde)

    from autograde.bench import METHODS, MODES

    p = sub.add_parser("bench", help="time and peak memory against sequence length, each run in a fresh process")
    p.add_argument("--n", type=int, nargs="+", default=[512, 1024, 2048, 4096], metavar="N", help="sequence lengths")
    p.add_argument("--methods", nargs="+", default=["naive", "chunked", "flash", "flash_cpu", "sdpa"],
                   choices=METHODS, help="implementations to measure (triton needs CUDA; chunked is forward only)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES,
                   help="forward, and/or backward (= forward + backward)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--causal", action="store_true")
    p.add_argument("--repeat", type=int, default=3, help="timed calls per measurement (median), after a first one")
    p.add_argument("--threads", type=int, default=0, help="torch threads per measurement (default: torch's own)")
    p.add_argument("--memory-limit-gb", type=float, default=4.0,
                   help="skip naive attention where its score matrices alone would exceed this (default 4)")
    p.add_argument("--plot", default="build/bench.png", help="where to save the plot ('none': no plot)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "lab":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.jupyter_args = extra
    from autograde.course import ProjectNotFound

    try:
        return args.func(args)
    except (FileNotFoundError, UnknownLesson, ProjectNotFound) as error:
        print(f"attention-course {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
