"""The sandbox's worker (autograde/execute_notebook.py), run directly on a small notebook."""

import json
import subprocess
import sys

import nbformat

from autograde.execution import WORKER


def run_worker(jobdir, *sources):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    nbformat.write(notebook, jobdir / "submission.ipynb")
    (jobdir / "job.json").write_text(json.dumps({"timeout": 30, "extra_arguments": []}))
    done = subprocess.run([sys.executable, "-I", str(WORKER), str(jobdir)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return nbformat.read(jobdir / "executed.ipynb", as_version=4)


def test_kernel_is_killed_after_the_last_cell_with_every_output_in(tmp_path):
    # A kernel asked to shut down runs its exit handlers (and nbclient polls until it has exited);
    # the worker kills it instead, once the last cell has answered.
    executed = run_worker(
        tmp_path,
        "import atexit, pathlib\natexit.register(pathlib.Path('exit_handler_ran').touch)",
        "print('last cell')",
    )
    assert executed.cells[1].outputs[0].text == "last cell\n"
    assert not (tmp_path / "exit_handler_ran").exists()
