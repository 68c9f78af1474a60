"""An IPython kernel in a sandbox, driven cell by cell by the grader outside it.

The kernel runs in :class:`autograde.sandbox.SandboxedProcess` and talks over ZeroMQ ``ipc``
sockets in the job's folder (the sandbox has no network, not even the grader's loopback). The
grader is the client: it sends each cell, collects what comes back, and decides everything about
time itself, so nothing the student's code writes to disk or prints can change which cell ran,
for how long, or how it ended.

Time is counted in CPU seconds of the sandbox's processes, not in seconds of the clock: a cell is
interrupted after ``cell_cpu_seconds`` of CPU (an endless loop), and the whole notebook after
``notebook_cpu_seconds``. A busy grading server slows a cell down without costing it CPU time, so
load never costs a point. A cell that waits without computing (``time.sleep``, a deadlock) is
stopped by the clock, with an allowance that grows with the CPU it did get: ``Budget.idle_seconds``
plus ``Budget.load_factor`` clock seconds per CPU second, so only a machine more than ``load_factor``
times oversubscribed could cut an honest cell short. Output that arrives after a cell's reply is not an
error: it is kept while the kernel lives.

Outputs are bounded as they arrive (count, lines and characters per output, bytes per notebook)
and kept as plain text only: rich outputs (HTML, JavaScript, images) become their ``text/plain``
form, so nothing the student's code displays can run in the instructor's browser. A kernel that
floods the grader with messages is stopped.
"""

from __future__ import annotations

import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty

import nbformat
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.connect import write_connection_file

from autograde.sandbox import Limits, SandboxedProcess

LATE_OUTPUT_SECONDS = 30.0  # how long to wait after a cell's reply for its last output
INTERRUPT_GRACE_CPU = 10.0  # CPU seconds an interrupted cell gets to stop before the kernel is killed
STARTUP_CPU_SECONDS = 30.0  # the most CPU a kernel's start counts towards its clock allowance (it takes ~1 s)
POLL_SECONDS = 0.2

MAX_OUTPUTS_PER_CELL = 100
MAX_LINES_PER_OUTPUT = 1000
MAX_CHARS_PER_OUTPUT = 20_000
MAX_NOTEBOOK_OUTPUT_CHARS = 4 * 2**20
MAX_MESSAGES = 20_000  # iopub messages per notebook; more is a flood, and the run stops


class KernelStartFailed(RuntimeError):
    """The sandboxed kernel did not start (or not in time); the message says why."""


@dataclass
class CellRun:
    """What one cell did: its outputs (bounded, plain), how it ended, and its CPU time."""

    outputs: list = field(default_factory=list)
    status: str = "not run"  # "ok", "error", "interrupted" or "not run"
    reason: str = ""  # why it was interrupted or not run
    cpu_seconds: float = 0.0
    execution_count: int | None = None


@dataclass(frozen=True)
class Budget:
    """How much time a submission's cells get (see the module doc)."""

    cell_cpu_seconds: float = 60.0
    notebook_cpu_seconds: float = 600.0
    idle_seconds: float = 120.0  # clock seconds a cell (or the kernel's start) may spend without computing
    notebook_idle_seconds: float = 600.0  # clock seconds a whole notebook may spend without computing
    load_factor: float = 10.0  # more clock seconds allowed per CPU second used

    def clock_allowance(self, cpu_used: float, notebook: bool = False) -> float:
        """Clock seconds a cell (or the notebook) may take, having used ``cpu_used`` seconds of CPU."""
        return (self.notebook_idle_seconds if notebook else self.idle_seconds) + self.load_factor * cpu_used


class SandboxedKernel:
    """A kernel started in a sandbox in ``workdir``; use as a context manager (``stop`` kills it)."""

    def __init__(self, workdir: Path, *, limits: Limits, env: dict[str, str], extra_arguments: list[str],
                 read_only: list[Path] = (), budget: Budget = Budget()) -> None:
        self.workdir, self.limits, self.budget = workdir, limits, budget
        folder = Path(tempfile.mkdtemp(prefix=".kernel-", dir=workdir))  # its sockets and connection file
        self.connection_file = folder / "connection.json"
        write_connection_file(str(self.connection_file), ip=str(folder / "socket"), transport="ipc",
                              key=secrets.token_hex(32).encode(), shell_port=1, iopub_port=2, stdin_port=3,
                              hb_port=4, control_port=5)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", str(self.connection_file), *extra_arguments]
        self.process = SandboxedProcess(argv, workdir, limits=limits, env=env, read_only=list(read_only))
        try:
            self.client = BlockingKernelClient()
            self.client.load_connection_file(str(self.connection_file))
            self.client.start_channels(hb=False)
        except BaseException:
            self.process.kill()
            raise
        self.messages = 0
        self.output_chars = 0
        self.stopped = ""  # why the kernel was stopped, once it was
        self._cells: dict[str, CellRun] = {}  # by the msg_id of its execute_request

    def __enter__(self) -> SandboxedKernel:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self, reason: str = "") -> None:
        """Kill the kernel and everything the run started (first, so that nothing it does afterwards counts)."""
        self.stopped = self.stopped or reason or "the kernel was stopped"
        try:
            self.process.kill()
        finally:
            self.client.stop_channels()

    def wait_until_ready(self) -> None:
        """Wait until the kernel answers a kernel_info request on the shell channel and its iopub channel
        is heard from; raise KernelStartFailed if it dies or idles.

        The iopub channel is a subscription, connected in the background: what the kernel publishes
        before it is connected is lost (zmq's "slow joiner"). On a loaded machine the shell reply can
        come first, and a first cell's output was then lost (3 of 12 starts with both cores busy).
        Each kernel_info request makes the kernel publish its busy and idle status, so the requests
        go on until one of those arrives."""
        start, cpu0 = time.monotonic(), self.process.cpu_seconds()
        asked, sent_at = {self.client.kernel_info()}, time.monotonic()
        replied = heard = False
        while True:
            if not replied:
                try:
                    reply = self.client.get_shell_msg(timeout=POLL_SECONDS)
                    replied = reply["parent_header"].get("msg_id") in asked
                except Empty:
                    pass
            heard = heard or self._heard_on_iopub(asked, 0.0 if not replied else POLL_SECONDS)
            if replied and heard:
                break
            if not self.process.alive():
                raise KernelStartFailed(f"the kernel exited while starting: {self.process.output()[-300:].strip()}")
            cpu = self.process.cpu_seconds() - cpu0
            if time.monotonic() - start > self.budget.clock_allowance(min(cpu, STARTUP_CPU_SECONDS)):
                raise KernelStartFailed(f"the kernel did not answer within {time.monotonic() - start:.0f} s "
                                        f"({cpu:.1f} s of CPU)")
            # a request can be lost while the sockets connect, and so can its status: ask again
            if time.monotonic() - sent_at > (0.5 if replied else 2):
                asked.add(self.client.kernel_info())
                sent_at = time.monotonic()
        while self._drain_iopub(0.0):  # the rest of its start-up status messages
            pass

    def _heard_on_iopub(self, asked: set[str], timeout: float) -> bool:
        """Whether an iopub message waiting (``timeout`` for the first) answers one of the ``asked`` requests."""
        heard = False
        while True:
            try:
                message = self.client.get_iopub_msg(timeout=timeout)
            except Empty:
                return heard
            timeout = 0.0
            parent = message.get("parent_header") if isinstance(message, dict) else None
            heard = heard or (isinstance(parent, dict) and parent.get("msg_id") in asked)

    def run_cell(self, source: str, cpu_left: float = float("inf"), clock_left: float = float("inf")) -> CellRun:
        """Run one cell to its end, interrupting it past its CPU time (or the ``cpu_left`` of the
        notebook's), or past its clock allowance (or the ``clock_left`` of the notebook's, which grows by
        ``load_factor`` seconds per CPU second the cell uses)."""
        run = CellRun(status="running")
        if self.stopped:
            return CellRun(reason=self.stopped)
        msg_id = self.client.execute(source, store_history=True, allow_stdin=False, stop_on_error=False)
        self._cells[msg_id] = run
        start, cpu0 = time.monotonic(), self.process.cpu_seconds()
        limit = min(self.budget.cell_cpu_seconds, cpu_left)
        reply, replied_at, interrupted_at = None, None, None
        while True:
            self._drain_iopub(POLL_SECONDS)
            run.cpu_seconds = self.process.cpu_seconds() - cpu0
            if self.stopped:
                break
            if reply is None:
                reply = self._shell_reply(msg_id)
                replied_at = time.monotonic() if reply is not None else None
            if reply is not None and (run.status != "running" or time.monotonic() - replied_at > LATE_OUTPUT_SECONDS):
                break  # idle came (status set by _drain_iopub), or the last output is late: go on
            if not self.process.alive():
                self.stop("the kernel died (a crash, os._exit, or running out of memory)")
                break
            if reply is not None:
                continue
            clock = time.monotonic() - start
            if interrupted_at is None and run.cpu_seconds > limit:
                interrupted_at = run.cpu_seconds
                run.reason = (f"used more than {limit:g} s of CPU time and was interrupted"
                              if limit == self.budget.cell_cpu_seconds else
                              f"was interrupted when the notebook had used its {self.budget.notebook_cpu_seconds:g} s "
                              "of CPU time")
                self._interrupt()
            elif interrupted_at is None and clock > min(self.budget.clock_allowance(run.cpu_seconds),
                                                         clock_left + self.budget.load_factor * run.cpu_seconds):
                interrupted_at = run.cpu_seconds
                run.reason = f"waited {clock:.0f} s without computing and was interrupted"
                self._interrupt()
            elif interrupted_at is not None and (run.cpu_seconds - interrupted_at > INTERRUPT_GRACE_CPU
                                                 or clock > 2 * self.budget.clock_allowance(run.cpu_seconds)):
                self.stop(f"a cell {run.reason}, and did not stop")
                break
        if reply is not None:
            content = reply.get("content", {})
            run.execution_count = content.get("execution_count") if isinstance(content, dict) else None
            if interrupted_at is not None:
                run.status = "interrupted"
                run.outputs = [o for o in run.outputs if o.get("output_type") != "error"] + [_timeout_output(run)]
            elif isinstance(content, dict) and content.get("status") == "error":
                run.status = "error"
                if not any(o.get("output_type") == "error" for o in run.outputs):  # no silent errors, as nbgrader
                    run.outputs.append(_plain_output("error", content) or nbformat.v4.new_output(
                        "error", ename="Error", evalue="the cell failed", traceback=[]))
            else:
                run.status = "ok"
        elif interrupted_at is not None:
            run.status = "interrupted"
            run.outputs.append(_timeout_output(run))
        else:
            run.status, run.reason = "not run", run.reason or self.stopped
        return run

    def _interrupt(self) -> None:
        """SIGINT the kernel, through its control channel (its control thread answers while a cell runs)."""
        self.client.control_channel.send(self.client.session.msg("interrupt_request", {}))

    def _shell_reply(self, msg_id: str) -> dict | None:
        while True:
            try:
                message = self.client.get_shell_msg(timeout=0)
            except Empty:
                return None
            if isinstance(message, dict) and message.get("parent_header", {}).get("msg_id") == msg_id:
                return message

    def _drain_iopub(self, timeout: float) -> bool:
        """Handle the iopub messages waiting (waiting ``timeout`` for the first); False if there were none."""
        try:
            message = self.client.get_iopub_msg(timeout=timeout)
        except Empty:
            return False
        while True:
            self.messages += 1
            if self.messages > MAX_MESSAGES:
                self.stop(f"it sent more than {MAX_MESSAGES} outputs")
                return False
            self._handle(message)
            try:
                message = self.client.get_iopub_msg(timeout=0)
            except Empty:
                return True

    def _handle(self, message: dict) -> None:
        """Attach one iopub message to its cell, as a bounded plain output (anything malformed is dropped)."""
        try:
            run = self._cells.get(message["parent_header"].get("msg_id"))
            kind, content = message["msg_type"], message["content"]
        except (KeyError, TypeError, AttributeError):
            return
        if run is None or not isinstance(content, dict):
            return
        if kind == "status":
            if content.get("execution_state") == "idle" and run.status == "running":
                run.status = "idle"  # the reply decides between ok and error
            return
        if kind == "clear_output":
            run.outputs.clear()
            return
        output = _plain_output(kind, content)
        if output is None or len(run.outputs) >= MAX_OUTPUTS_PER_CELL:
            return
        size = len(str(output))
        if self.output_chars + size > MAX_NOTEBOOK_OUTPUT_CHARS:
            return
        self.output_chars += size
        if (output.output_type == "stream" and run.outputs and run.outputs[-1].output_type == "stream"
                and run.outputs[-1].name == output.name):  # one output per stream, as Jupyter shows it
            merged = run.outputs[-1].text + output.text
            run.outputs[-1].text = _bound_text(merged)
        else:
            run.outputs.append(output)


def _bound_text(text: str) -> str:
    lines = text[:MAX_CHARS_PER_OUTPUT].split("\n")
    if len(lines) > MAX_LINES_PER_OUTPUT or len(text) > MAX_CHARS_PER_OUTPUT:
        return "\n".join(lines[:MAX_LINES_PER_OUTPUT]) + "\n... output truncated ..."
    return text


def _text(value) -> str | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = "".join(value)
    return _bound_text(value) if isinstance(value, str) else None


def _plain_output(kind: str, content: dict):
    """An nbformat output of plain text built from a message's content, or None if it is not one."""
    if kind == "stream":
        name, text = content.get("name"), _text(content.get("text"))
        if name in ("stdout", "stderr") and text is not None:
            return nbformat.v4.new_output("stream", name=name, text=text)
    elif kind in ("display_data", "execute_result", "update_display_data"):
        data = content.get("data")
        text = _text(data.get("text/plain")) if isinstance(data, dict) else None
        if text is not None:
            if kind == "execute_result":
                count = content.get("execution_count")
                return nbformat.v4.new_output("execute_result", data={"text/plain": text},
                                              execution_count=count if isinstance(count, int) else None)
            return nbformat.v4.new_output("display_data", data={"text/plain": text})
    elif kind == "error":
        ename, evalue, traceback = content.get("ename"), content.get("evalue"), content.get("traceback")
        if isinstance(ename, str) and isinstance(evalue, str) and isinstance(traceback, list):
            lines = [line[:MAX_CHARS_PER_OUTPUT] for line in traceback[-50:] if isinstance(line, str)]
            return nbformat.v4.new_output("error", ename=ename[:200], evalue=evalue[:MAX_CHARS_PER_OUTPUT],
                                          traceback=lines)
    return None


def _timeout_output(run: CellRun):
    message = f"this cell {run.reason}"
    return nbformat.v4.new_output("error", ename="CellTimeoutError", evalue=message,
                                  traceback=[f"\x1b[0;31mCellTimeoutError\x1b[0m: {message}"])
