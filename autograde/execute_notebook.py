"""Inside the grading sandbox: execute one submission, as nbgrader's autograde would, and write it back.

    python -I execute_notebook.py JOBDIR

``JOBDIR`` (the sandbox's only writable folder) holds ``submission.ipynb``, already sanitized by
nbgrader outside (outputs cleared, locked and test cells restored from the instructor's version),
the lesson's files and the student kit, ``grading_inputs.pt`` and ``job.json`` (the per-cell
time limit and the kernel's arguments from the course's nbgrader configuration). It runs with
nbclient, the library under nbgrader's ``Execute``, set as ``Execute`` sets it (errors recorded
and the run goes on; a cell past the time limit is interrupted and gets a ``CellTimeoutError``),
without importing nbgrader: that import alone took 2 s of every submission's run. Outputs are
trimmed (:func:`trim_outputs`), and the result is ``executed.ipynb``, or ``execution_error.txt``
saying why there is none (the kernel died, ...).

Everything here, and everything it writes, is as untrusted as the student's code that runs with
it: the grader outside reads the outputs for the feedback and the answers as data, and computes
every score itself. This file is run by path and imports nothing from course_lib: the sandbox
shows it this one file, not the course.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MAX_OUTPUT_LINES = 1000  # per cell, as nbgrader's LimitOutput
MAX_OUTPUT_CHARS = 200_000  # per output: a single huge line is cut too
MAX_OUTPUTS = 100  # per cell
TIMEOUT_ERROR = {"ename": "CellTimeoutError", "evalue": "",
                 "traceback": ["\x1b[0;31mCellTimeoutError\x1b[0m: No reply from kernel before timeout"]}


def trim_outputs(notebook) -> None:
    """Cut each code cell's text outputs to MAX_OUTPUT_LINES lines and MAX_OUTPUT_CHARS characters."""
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        lines = 0
        outputs = cell.outputs[:MAX_OUTPUTS]
        for output in outputs:
            if output.output_type == "stream":
                text = output.text[:MAX_OUTPUT_CHARS].split("\n")[:max(MAX_OUTPUT_LINES - lines, 1)]
                lines += len(text)
                truncated = len(text) < output.text.count("\n") + 1 or len(output.text) > MAX_OUTPUT_CHARS
                output.text = "\n".join(text) + ("\n... output truncated ..." if truncated else "")
            elif output.output_type == "error":
                output.traceback = [line[:MAX_OUTPUT_CHARS] for line in output.traceback[-100:]]
                output.evalue = str(output.get("evalue", ""))[:MAX_OUTPUT_CHARS]
            else:
                data = output.get("data", {})
                for mime in list(data):
                    if len(str(data[mime])) > 8 * MAX_OUTPUT_CHARS:  # e.g. an enormous image
                        data[mime] = "" if mime != "text/plain" else "... output too large, removed ..."
        cell.outputs = outputs


def main(jobdir: Path) -> int:
    # nbformat's schema validation imports jsonschema, which compiles some 40 grammars of
    # rfc3987_syntax on import (1 to 3 s of every submission's run) for string formats that no
    # notebook schema uses; jsonschema skips those formats when the module cannot be imported.
    sys.modules["rfc3987_syntax"] = None
    import nbformat
    from nbclient import NotebookClient

    class Client(NotebookClient):
        def on_cell_executed(self, cell, execute_reply, **kwargs):  # as nbgrader's Execute: no silent errors
            content = execute_reply["content"]
            if content["status"] == "error" and not any(
                    o.output_type == "error" and o.get("ename") == content["ename"] for o in cell.outputs):
                cell.outputs.append(nbformat.v4.new_output("error", ename=content["ename"], evalue=content["evalue"],
                                                           traceback=content["traceback"] or ["ERROR"]))

    job = json.loads((jobdir / "job.json").read_text())
    notebook = nbformat.read(jobdir / "submission.ipynb", as_version=4)
    # shutdown_kernel="immediate": the kernel is killed once the last cell has answered, instead of
    # asked to shut down and polled until it exits (1.2 s of every submission here, with its core idle);
    # every output and recorded answer is in by then, and the sandbox kills what is left anyway.
    client = Client(notebook, timeout=job["timeout"], interrupt_on_timeout=True, allow_errors=True,
                    raise_on_iopub_timeout=True, error_on_timeout=TIMEOUT_ERROR, shutdown_kernel="immediate",
                    extra_arguments=job["extra_arguments"], resources={"metadata": {"path": str(jobdir)}})
    try:
        client.execute()
    except Exception as error:  # the kernel died, would not start, ...: the grader reports it
        (jobdir / "execution_error.txt").write_text(f"{type(error).__name__}: {error}"[:4000])
        return 1
    trim_outputs(notebook)
    nbformat.write(notebook, jobdir / "executed.ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
