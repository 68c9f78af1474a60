"""Train the solution of every trained-model exercise over seeds and floating-point paths; print its accuracy.

    python benchmarks/trained_models.py [--lesson L ...] [--seeds 0-9] [--conditions C ...] [--jobs N]

A trained model's grade must not depend on the student's CPU. Each *condition* stands in for
another machine by changing the floating-point path of the same code: the instruction set of
ATen's kernels (``ATEN_CPU_CAPABILITY``: this machine's best, ``avx2`` or ``default``, the
plain C++ path an ARM or an old x86 takes), MKL's (``MKL_ENABLE_INSTRUCTIONS=SSE4_2``), and the
number of torch threads (1, as the notebooks set, or 2, whose reductions split the work
differently). Every condition runs in its own subprocess, since the variables must be set before
torch is imported.

The training is the solution notebook's own: the worker executes the notebook's code cells (from
``solutions/``, tests left out) up to its training cell, then for each seed calls the solution's
``train_reversal_model(task, seed)`` (Lesson 3), or runs the ``train_model`` cell with its
``seed=0`` set to the seed (Lesson 2). Nothing of the recipe (sizes, steps, learning rate,
schedule) is written here. The model is scored on the fixed evaluation set of the visible test
(``accuracy``) and on a second fixed set (``other``: Lesson 2's hidden 500 dates; for Lesson 3,
500 random sequences the task never holds out), then judged by the grader's own check of the
exercise, visible and hidden cases (``graded``: Lesson 3's includes recomputing the model's logits
from its weights). ``train s`` is the CPU time of the training call (all threads).

Prints one row per run, then per lesson and condition the min / median / max accuracy, and the
worst case of the lesson against the grader's threshold.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import typing
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]

# name -> (environment variables, torch threads). The variables must be set before torch is imported.
CONDITIONS = {
    "native": ({}, 1),
    "avx2": ({"ATEN_CPU_CAPABILITY": "avx2"}, 1),
    "default": ({"ATEN_CPU_CAPABILITY": "default"}, 1),
    "mkl-sse4.2": ({"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}, 1),
    # idle threads sleep: spinning on a busy machine changes no number
    "2 threads": ({"OMP_WAIT_POLICY": "PASSIVE"}, 2),
}
OTHER_SEED = 1  # Lesson 3's second set: 500 random sequences, the same for every run


@dataclass(frozen=True)
class TrainedExercise:
    lesson: str
    source: str  # the solution notebook, relative to the project root
    training_cell: str  # grade_id of the solution cell that trains (Lesson 3: defines the function that does)
    graded_as: str  # the grader's exercise that judges the trained model


EXERCISES = {
    "lesson2_additive": TrainedExercise("lesson2_additive", "solutions/lesson2_additive/additive_attention.py",
                                        "train_model", "trained_model"),
    "lesson3_multihead": TrainedExercise("lesson3_multihead", "solutions/lesson3_multihead/multihead_attention.py",
                                         "train_reversal_model", "reversal_model"),
}


# --- worker: one condition, in its own process ----------------------------------------------------

def notebook_until(source: str, grade_id: str) -> tuple[dict, str]:
    """Run the notebook's code cells before the cell ``grade_id`` (test cells left out).

    Returns the namespace they made and the source of the cell ``grade_id``."""
    import jupytext

    namespace = {"__name__": "__main__"}
    for cell in jupytext.read(PROJECT / source).cells:
        nbgrader = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or nbgrader.get("grade"):
            continue
        if nbgrader.get("grade_id") == grade_id:
            return namespace, cell.source
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(cell.source, source, "exec"), namespace)
    raise KeyError(f"{source} has no cell with grade_id {grade_id!r}")


def lesson3_runs(namespace: dict, cell: str, seeds: list[int]):
    """(seed, trained model, CPU seconds) for each seed, from the solution's train_reversal_model."""
    exec(compile(cell, "train_reversal_model", "exec"), namespace)
    for seed in seeds:
        started = time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):
            model = namespace["train_reversal_model"](namespace["task"], seed=seed)
        yield seed, model, time.process_time() - started


def lesson3_scores(namespace: dict, model) -> tuple[float, float]:
    import torch

    from course_kit.training import sequence_accuracy

    task = namespace["task"]
    other = torch.randint(0, task.vocab_size, (500, task.length), generator=torch.Generator().manual_seed(OTHER_SEED))
    return (sequence_accuracy(model, task.held_out_inputs, task.held_out_targets),
            sequence_accuracy(model, other, other.flip(-1)))


def lesson2_runs(namespace: dict, cell: str, seeds: list[int]):
    """(seed, trained model, CPU seconds) for each seed, from the train_model cell with its seed=0 set to the seed."""
    if "seed=0" not in cell:
        raise ValueError("Lesson 2's train_model cell no longer says seed=0: update this benchmark")
    for seed in seeds:
        started = time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(cell.replace("seed=0", f"seed={seed}"), "train_model", "exec"), namespace)
        yield seed, namespace["model"], time.process_time() - started


def lesson2_scores(namespace: dict, model) -> tuple[float, float]:
    from autograde.exercises.lesson2_additive import hidden_test_pairs
    from course_kit.seq2seq import exact_match

    return exact_match(model, namespace["data"].test), exact_match(model, hidden_test_pairs())


# lesson -> (its runs: (seed, model, CPU seconds) for each seed; its scores: (accuracy, other))
TRAINING = {"lesson2_additive": (lesson2_runs, lesson2_scores), "lesson3_multihead": (lesson3_runs, lesson3_scores)}


def trained(lesson: str, seeds: list[int], edit=None):
    """(namespace, seed, model, CPU seconds) of the solution of ``lesson`` trained with each seed; ``edit``
    may change the notebook's namespace before its training cell runs (a student's mistaken function)."""
    exercise = EXERCISES[lesson]
    namespace, cell = notebook_until(exercise.source, exercise.training_cell)
    if edit is not None:
        edit(namespace)
    for seed, model, seconds in TRAINING[lesson][0](namespace, cell, seeds):
        yield namespace, seed, model, seconds


def graded(lesson: str, model) -> bool:
    """Whether the grader's check of the exercise passes the model: its visible cases and its hidden ones."""
    from autograde.exercises import check_against_reference
    from course_kit.checks import CheckFailed

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the cases are fixed: any seed gives the same
            check_against_reference(EXERCISES[lesson].graded_as, model, seed=0)
    except CheckFailed:
        return False
    return True


def worker(lesson: str, condition: str, seeds: list[int]) -> None:
    """Train and score ``lesson``'s solution for each seed; print one JSON line per run."""
    os.environ.update(MPLBACKEND="agg", TQDM_DISABLE="1")  # no windows, no progress bars of the notebook's own
    import torch

    def threads(namespace):  # after the notebook's own set_num_threads(1)
        torch.set_num_threads(CONDITIONS[condition][1])

    for namespace, seed, model, seconds in trained(lesson, seeds, edit=threads):
        accuracy, other = TRAINING[lesson][1](namespace, model)
        print(json.dumps({"lesson": lesson, "condition": condition, "seed": seed, "accuracy": accuracy,
                          "other": other, "graded": graded(lesson, model), "seconds": seconds,
                          "capability": torch.backends.cpu.get_cpu_capability(),
                          "threads": torch.get_num_threads()}), flush=True)


# --- the driver -----------------------------------------------------------------------------------

def thresholds() -> dict[str, float]:
    """The grader's thresholds of the trained-model exercises."""
    from autograde.exercises import lesson2_additive, lesson3_multihead

    return {"lesson2_additive": lesson2_additive.MIN_TEST_ACCURACY,
            "lesson3_multihead": lesson3_multihead.MIN_SEQUENCE_ACCURACY}


def parse_seeds(text: str) -> list[int]:
    """'0-9' or '0,3,5' or '0-4,10'."""
    seeds = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds += range(int(low), int(high or low) + 1)
    return seeds


def launch(lesson: str, condition: str, seeds: list[int]) -> tuple[subprocess.Popen, typing.IO]:
    """The worker of one condition, and the file that collects its stderr."""
    environment = {**os.environ, **CONDITIONS[condition][0], "PYTHONPATH": os.pathsep.join(
        filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, __file__, "--worker", lesson, condition, "--seeds", ",".join(map(str, seeds))]
    errors = tempfile.TemporaryFile("w+")  # a file, not a pipe: a worker's warnings cannot fill it and block it
    return subprocess.Popen(command, env=environment, cwd=PROJECT, stdout=subprocess.PIPE, stderr=errors,
                            text=True), errors


def row(r: dict) -> str:
    return (f"| {r['lesson']} | {r['condition']} ({r['capability']}, {r['threads']} thr) | {r['seed']} | "
            f"{r['accuracy']:.1%} | {r['other']:.1%} | {'pass' if r['graded'] else 'FAIL'} | {r['seconds']:.1f} |")


def run_all(jobs: list[tuple[str, str]], seeds: list[int], parallel: int) -> list[dict]:
    """Every (lesson, condition) in its own worker, ``parallel`` at a time; print each run as it ends."""
    import selectors

    from tqdm import tqdm

    results, pending, running = [], list(jobs), {}
    selector = selectors.DefaultSelector()
    print("| lesson | condition | seed | accuracy | other | graded | train s |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    with tqdm(total=len(jobs) * len(seeds), desc="trained models", unit="model") as bar:
        while pending or running:
            while pending and len(running) < parallel:
                process, errors = launch(*pending.pop(0), seeds)
                running[process.stdout] = process, errors
                selector.register(process.stdout, selectors.EVENT_READ)
            for key, _ in selector.select():
                line = key.fileobj.readline()
                if line:
                    results.append(json.loads(line))
                    bar.write(row(results[-1]))
                    bar.update()
                    continue
                process, errors = running.pop(key.fileobj)
                selector.unregister(key.fileobj)
                if process.wait() != 0:  # say so, and carry on with the other conditions
                    errors.seek(0)
                    bar.write(f"worker {' '.join(process.args[3:5])} failed:\n{errors.read()}")
                errors.close()
    return results


def summarise(results: list[dict], limits: dict[str, float]) -> None:
    """Per lesson and condition, the spread of accuracy; per lesson, the worst run against the threshold."""
    print("\n| lesson | condition | runs | accuracy min / median / max | other min | graded | train s median |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    for lesson in sorted({r["lesson"] for r in results}):
        for condition in CONDITIONS:
            rows = [r for r in results if r["lesson"] == lesson and r["condition"] == condition]
            if rows:
                accuracy = [r["accuracy"] for r in rows]
                print(f"| {lesson} | {condition} | {len(rows)} | {min(accuracy):.1%} / "
                      f"{statistics.median(accuracy):.1%} / {max(accuracy):.1%} | "
                      f"{min(r['other'] for r in rows):.1%} | {sum(r['graded'] for r in rows)} of {len(rows)} | "
                      f"{statistics.median(r['seconds'] for r in rows):.1f} |")
    print()
    for lesson in sorted({r["lesson"] for r in results}):
        rows = [r for r in results if r["lesson"] == lesson]
        worst = min(rows, key=lambda r: min(r["accuracy"], r["other"]))
        low = min(worst["accuracy"], worst["other"])
        failed = [r for r in rows if not r["graded"]]
        print(f"{lesson}: worst of {len(rows)} runs {low:.1%} ({worst['condition']}, seed {worst['seed']}), "
              f"threshold {limits[lesson]:.0%}, margin {100 * (low - limits[lesson]):+.1f} points; the grader "
              f"passes {len(rows) - len(failed)} of {len(rows)}"
              + "".join(f"; FAILS {r['condition']} seed {r['seed']}" for r in failed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lesson", nargs="+", choices=list(EXERCISES), default=list(EXERCISES))
    parser.add_argument("--seeds", default="0-9", help="e.g. 0-9 or 0,3,5 (default 0-9)")
    parser.add_argument("--conditions", nargs="+", choices=list(CONDITIONS), default=list(CONDITIONS))
    parser.add_argument("--jobs", type=int, default=1, help="workers at a time (default 1: the machine is shared)")
    parser.add_argument("--worker", nargs=2, metavar=("LESSON", "CONDITION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    if args.worker:
        worker(*args.worker, seeds)
        return
    jobs = [(lesson, condition) for lesson in args.lesson for condition in args.conditions]
    results = run_all(jobs, seeds, args.jobs)
    summarise(results, thresholds())


if __name__ == "__main__":
    main()
