"""Run one untrusted command (a student's notebook executed by a kernel it starts) in a sandbox.

The command sees a whitelisted, read-only view of the machine (the system folders and the Python
installation) plus one writable folder, ``workdir``; it has no network but loopback, its own PID,
IPC and UTS namespaces, and resource limits on every process it starts. Everything it started is
killed when it ends, when the wall limit is reached, or when the caller dies.

Isolation comes from bubblewrap (``bwrap``, installed by ``./course`` on Linux). Without it the
command still runs under the same limits, in its own process group, and ``run_sandboxed`` warns
that the student's code can then read and write whatever the grader's user can.

The run also gets a cgroup of its own (``_RunCgroup``) where the controllers are writable (root
with cgroup v1, or a v2 cgroup that delegates them): ``pids`` caps its processes (``RLIMIT_NPROC``
does not bind root, and inside bwrap's user namespace a root caller is still root to the kernel),
``cpu`` the cores all its processes together keep busy, so a fork bomb does not starve the runs
beside it, and ``memory`` their memory together, so the kernel OOM-kills inside the run, not the
grader. The cgroup also finds every process of the run, even one that left the process group, when
it is time to kill them. A controller that is not there is left off (see ``_RunCgroup``). See
autograde/THREAT_MODEL.md, "Isolation".
"""
from __future__ import annotations

import collections
import ctypes
import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

OUTPUT_CHARS = 20_000  # how much of the end of the output a result keeps

# Files under a whitelisted /etc that the sandboxed root could otherwise read (it is uid 0 to the kernel).
_HIDDEN_IN_ETC = ("shadow", "shadow-", "gshadow", "gshadow-")


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run: the rlimits bind each process it starts, the cgroup
    limits (processes, cpus, memory_total_bytes) all of them together, where available (_RunCgroup)."""

    memory_bytes: int = 4 * 2**30  # RLIMIT_AS: address space (torch's import maps about 1.5 GB)
    cpu_seconds: int = 900  # RLIMIT_CPU: CPU time of each process
    processes: int = 64  # pids.max of the run's cgroup; else RLIMIT_NPROC (above the user's running ones)
    cpus: float = 1.0  # cores all its processes together may keep busy (the run's cpu cgroup)
    memory_total_bytes: int = 6 * 2**30  # memory of all its processes together (the run's memory cgroup)
    file_bytes: int = 512 * 2**20  # RLIMIT_FSIZE: the largest file it may write; also the size of its /tmp
    wall_seconds: float = 1800  # the whole run; then everything is killed


@dataclass(frozen=True)
class SandboxResult:
    returncode: int | None  # None when killed at the wall limit
    timed_out: bool
    output: str  # the last OUTPUT_CHARS characters of stdout and stderr together
    isolated: bool  # whether it ran in bubblewrap


class SandboxWarning(RuntimeWarning):
    """Grading runs without isolation (no usable bubblewrap)."""


@functools.cache
def isolation() -> str | None:
    """'bubblewrap' when a real sandbox works here (bwrap on PATH and a trial run succeeds), else None."""
    if not sys.platform.startswith("linux") or shutil.which("bwrap") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        probe = _bwrap_prefix(Path(tmp), (), {"PATH": "/usr/bin:/bin"}, 2**20)
        try:
            trial = subprocess.run([*probe, sys.executable, "-c", "pass"], capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
    return "bubblewrap" if trial.returncode == 0 else None


class SandboxedProcess:
    """A command running in a sandbox (see the module doc), with the CPU time all its processes used.

    Started at construction; :meth:`kill` ends it and everything it started, and must be called
    (``with SandboxedProcess(...) as process:`` does). ``cpu_seconds`` comes from the run's cgroup
    (``cpuacct.usage`` on cgroup v1, ``cpu.stat`` on v2) when it has one, else from the process tree
    in ``/proc`` (its live processes and the children they waited for).
    """

    def __init__(self, argv: list[str], workdir: Path, *, limits: Limits = Limits(),
                 read_only: Sequence[Path] = (), env: Mapping[str, str] | None = None) -> None:
        workdir = Path(workdir).resolve()
        self.isolated = isolation() is not None
        self.limits = limits
        environment = {
            "PATH": os.pathsep.join([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": str(workdir),
            "LANG": "C.UTF-8",
            "TMPDIR": "/tmp" if self.isolated else str(workdir / "tmp"),
        }
        environment.update(env or {})
        if self.isolated:
            command = [*_bwrap_prefix(workdir, read_only, environment, limits.file_bytes), *argv]
        else:
            warnings.warn(
                "grading runs WITHOUT isolation (bubblewrap is not installed or user namespaces are off): "
                "the student's code can read and write every file this user can (solutions, gradebook, other "
                "submissions) and reach the network; only the resource limits and the final kill apply. "
                "Install bubblewrap (apt-get install bubblewrap) to sandbox it.", SandboxWarning, stacklevel=3)
            (workdir / "tmp").mkdir(exist_ok=True)
            command = list(argv)
        self.cgroup = _RunCgroup.create(limits)
        # RLIMIT_NPROC counts all the processes of the user (root is exempt), so add those already running.
        nproc = None if "pids" in self.cgroup.controllers or os.getuid() == 0 else \
            limits.processes + _processes_of_user(os.getuid())
        try:
            self.popen = subprocess.Popen(
                command, cwd=workdir, env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=functools.partial(_limit_child, limits, self.cgroup, nproc))
        except BaseException:
            self.cgroup.kill_and_remove()
            raise
        self._tail = _OutputTail(self.popen.stdout)
        self._cpu_of_the_dead = 0.0  # the tree's processes that exited unwaited (no cgroup)

    def __enter__(self) -> SandboxedProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        """CPU time (user and system) used so far by every process of the run."""
        measured = self.cgroup.cpu_seconds()
        return measured if measured is not None else _tree_cpu_seconds(self.popen.pid)

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit status, or None when ``timeout`` seconds passed first."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """Kill the process group (bwrap, whose PID namespace dies with it; or the plain command's group)
        and every process left in the run's cgroup (those that left the group with setsid)."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.popen.wait()
        self.cgroup.kill_and_remove()

    def output(self) -> str:
        """The last OUTPUT_CHARS characters of its stdout and stderr (after :meth:`kill`)."""
        return self._tail.text()


def run_sandboxed(argv: list[str], workdir: Path, *, limits: Limits = Limits(),
                  read_only: Sequence[Path] = (), env: Mapping[str, str] | None = None) -> SandboxResult:
    """Run ``argv`` in ``workdir`` (its only writable place) under ``limits``; kill all it started at the end.

    ``read_only`` adds files or folders it may read (a worker script, say); ``env`` adds to the minimal
    environment (PATH, HOME=workdir, LANG, TMPDIR). The output is stdout and stderr interleaved.
    """
    with SandboxedProcess(argv, workdir, limits=limits, read_only=read_only, env=env) as process:
        returncode = process.wait(timeout=limits.wall_seconds)
    return SandboxResult(returncode, returncode is None, process.output(), process.isolated)


def _tree_cpu_seconds(root: int) -> float:
    """CPU time of ``root`` and its descendants, from /proc (utime, stime, and cutime, cstime for the
    children each one waited for)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = sum(int(f) for f in fields[11:15]) / ticks  # utime stime cutime cstime
    tree, frontier = {root}, [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier and pid not in tree]
        tree.update(frontier)
    return sum(times.get(pid, 0.0) for pid in tree)


@functools.cache
def _bwrap_help() -> str:
    try:
        return subprocess.run(["bwrap", "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _bwrap_prefix(workdir: Path, read_only: Sequence[Path], environment: Mapping[str, str],
                  tmp_bytes: int) -> list[str]:
    """bwrap's arguments up to the command: whitelisted read-only binds, workdir read-write, no network."""
    # --cap-drop ALL: a root caller keeps every capability in the new user namespace otherwise, and
    # CAP_SYS_ADMIN there could remount the read-only binds read-write (tried: it can).
    args = ["bwrap", "--unshare-all", "--unshare-user", "--cap-drop", "ALL", "--die-with-parent", "--new-session",
            "--proc", "/proc", "--dev", "/dev"]
    # Newer bwrap (0.8): no nested user namespaces (less kernel to attack), and a /tmp of bounded size.
    if "--disable-userns" in _bwrap_help():
        args += ["--disable-userns"]
    if "--size" in _bwrap_help():
        args += ["--size", str(tmp_bytes)]
    args += ["--tmpfs", "/tmp"]
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc"):
        if os.path.islink(top):  # /bin -> usr/bin on merged-/usr systems
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for name in _HIDDEN_IN_ETC:
        if os.path.isfile(f"/etc/{name}"):
            args += ["--ro-bind", "/dev/null", f"/etc/{name}"]
    for path in _python_paths() + [Path(p).resolve() for p in read_only]:
        args += ["--ro-bind", str(path), str(path)]
    args += ["--bind", str(workdir), str(workdir), "--chdir", str(workdir), "--clearenv"]
    for name, value in environment.items():
        args += ["--setenv", name, value]
    return args + ["--"]


def _python_paths() -> list[Path]:
    """The Python installation and the environment (a venv), each once, outside the system folders."""
    candidates = [sys.base_prefix, sys.prefix, os.path.dirname(sys.executable),
                  os.path.dirname(os.path.realpath(sys.executable))]
    system = [Path(p) for p in ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc")]
    paths: list[Path] = []
    for path in sorted({Path(os.path.realpath(c)) for c in candidates}, key=lambda p: len(p.parts)):
        if not any(path == other or other in path.parents for other in paths + system):
            paths.append(path)
    # A venv's bin/python is a link to the base interpreter: bind the venv at its own path too.
    for path in (Path(sys.prefix), Path(os.path.dirname(sys.executable))):
        if path.resolve() != path and not any(path == o or o in path.parents for o in paths + system):
            paths.append(path)
    return paths


def _limit_child(limits: Limits, cgroup: _RunCgroup, nproc: int | None) -> None:
    """In the child before exec: join the run's cgroup, set the rlimits every descendant inherits."""
    cgroup.join(os.getpid())
    for which, value in ((resource.RLIMIT_AS, limits.memory_bytes), (resource.RLIMIT_CPU, limits.cpu_seconds),
                         (resource.RLIMIT_FSIZE, limits.file_bytes), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(which, (value, value))
    if nproc is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    _die_with_parent()


def _processes_of_user(uid: int) -> int:
    """How many processes (threads included, as RLIMIT_NPROC counts them) this uid runs now."""
    count = 0
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                count += len(os.listdir(entry / "task"))
        except OSError:
            pass
    return count


def _die_with_parent() -> None:
    """SIGKILL this process when the caller dies (prctl PR_SET_PDEATHSIG; Linux only)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


class _OutputTail:
    """Reads a pipe to its end in a thread, keeping only the last OUTPUT_CHARS characters."""

    def __init__(self, pipe):
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe) -> None:
        with pipe:
            for chunk in iter(lambda: pipe.read1(65536), b""):
                self._chunks.append(chunk)
                self._size += len(chunk)
                while self._size - len(self._chunks[0]) >= 4 * OUTPUT_CHARS:
                    self._size -= len(self._chunks.popleft())

    def text(self) -> str:
        # Everything that held the pipe open is dead by now; a grandchild outside the cgroup could
        # still hold it (no isolation, no cgroup), so do not wait on it for ever.
        self._thread.join(timeout=5)
        return b"".join(list(self._chunks)).decode("utf-8", "replace")[-OUTPUT_CHARS:]


_CPU_PERIOD_US = 100_000  # the CFS period; the run gets limits.cpus of it per period


class _RunCgroup:
    """The run's own cgroup, a folder below ours in each hierarchy holding a controller we use.

    Created before the command starts, joined by it before exec (so every process of the run is in
    it, including those that leave the process group), killed and removed at the end. Its limits:

    - ``pids``: ``pids.max = limits.processes`` (binds root too, unlike ``RLIMIT_NPROC``);
    - ``cpu``: at most ``limits.cpus`` cores for all the run's processes together (v1
      ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, v2 ``cpu.max``);
    - ``memory``: at most ``limits.memory_total_bytes`` of memory for all of them together (v1
      ``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes`` so swap does not extend it, v2
      ``memory.max`` and ``memory.swap.max = 0``); past it the kernel OOM-kills inside the run.

    Each controller is optional: one that this process's cgroup does not have, or may not write
    (not root, a v2 cgroup that does not delegate it), is left off, and then: without ``pids`` only
    ``RLIMIT_NPROC`` limits processes (not for root); without ``cpu`` nothing caps the cores a run
    keeps busy (``RLIMIT_CPU`` still bounds each process's CPU time); without ``memory`` only
    ``RLIMIT_AS`` per process holds and the machine's OOM killer decides on the total. The final
    kill uses whichever folders there are; with none it relies on the process group (and, with
    bubblewrap, its PID namespace) alone.
    """

    def __init__(self, folders: Mapping[str, Path]):
        self.folders = dict(folders)  # controller -> its folder (on cgroup v2 one folder holds them all)

    @property
    def controllers(self) -> frozenset[str]:
        return frozenset(self.folders)

    @classmethod
    def create(cls, limits: Limits) -> _RunCgroup:
        """New folders with the limits set, for every controller that is available and writable."""
        quota = max(1000, round(limits.cpus * _CPU_PERIOD_US))  # the kernel's smallest quota is 1 ms
        memory = str(limits.memory_total_bytes)
        # controller -> {v1, v2} -> [(file, value, required)]
        settings = {
            "pids": {False: [("pids.max", str(limits.processes), True)],
                     True: [("pids.max", str(limits.processes), True)]},
            "cpu": {False: [("cpu.cfs_period_us", str(_CPU_PERIOD_US), True), ("cpu.cfs_quota_us", str(quota), True)],
                    True: [("cpu.max", f"{quota} {_CPU_PERIOD_US}", True)]},
            "memory": {False: [("memory.limit_in_bytes", memory, True), ("memory.memsw.limit_in_bytes", memory, False)],
                       True: [("memory.max", memory, True), ("memory.swap.max", "0", False)]},
            "cpuacct": {False: [], True: []},  # accounting only: the run's CPU time (cpu_seconds)
        }
        name = f"attention-course-sandbox-{uuid.uuid4().hex[:12]}"
        made: dict[Path, Path] = {}  # parent -> our new folder below it
        folders: dict[str, Path] = {}
        for controller, (parent, v2) in _own_cgroups().items():
            if parent not in made:
                try:
                    (parent / name).mkdir()
                except OSError:
                    continue
                made[parent] = parent / name
            if _write_all(made[parent], settings[controller][v2]):
                folders[controller] = made[parent]
        for unused in set(made.values()) - set(folders.values()):
            _remove(unused)
        return cls(folders)

    def cpu_seconds(self) -> float | None:
        """CPU time used by the run's processes (cgroup v1 ``cpuacct.usage``, v2 ``cpu.stat``), or None."""
        folder = self.folders.get("cpuacct")
        try:
            if folder is not None and (folder / "cpuacct.usage").exists():
                return int((folder / "cpuacct.usage").read_text()) / 1e9
            for folder in set(self.folders.values()):
                if (folder / "cpu.stat").exists() and not (folder / "cpuacct.usage").exists():
                    for line in (folder / "cpu.stat").read_text().splitlines():
                        if line.startswith("usage_usec "):
                            return int(line.split()[1]) / 1e6
        except (OSError, ValueError):
            pass
        return None

    def join(self, pid: int) -> None:
        for folder in set(self.folders.values()):
            (folder / "cgroup.procs").write_text(str(pid))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for folder in set(self.folders.values()):
            try:
                found.update(int(line) for line in (folder / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return found

    def kill_and_remove(self) -> None:
        # Forks fail at pids.max, so repeated passes catch up with anything still forking.
        left = set(self.folders.values())
        deadline = time.monotonic() + 10
        while left and time.monotonic() < deadline:
            pids = self.pids()
            if not pids:
                left = {folder for folder in left if not _remove(folder)}  # an exiting process keeps it busy
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if left:
                time.sleep(0.02)


def _write_all(folder: Path, settings: Sequence[tuple[str, str, bool]]) -> bool:
    """Write each (file, value); False when a required one is missing or refused."""
    for file, value, required in settings:
        try:
            (folder / file).write_text(value)
        except OSError:
            if required:
                return False
    return True


def _remove(folder: Path) -> bool:
    try:
        folder.rmdir()
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _own_cgroups() -> dict[str, tuple[Path, bool]]:
    """For pids, cpu, cpuacct and memory: the folder of this process's cgroup in the hierarchy that has
    the controller, and whether that is cgroup v2 (used only where our v2 cgroup delegates it)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = [line.split(" - ") for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    except OSError:
        return {}
    cgroup_mounts = []  # (mount point, the cgroup path mounted there, filesystem type, superblock options)
    for mount in mounts:  # "id parent dev root point options [tags] - fstype source superoptions"
        if len(mount) == 2 and mount[1].split()[0] in ("cgroup", "cgroup2"):
            head, tail = mount[0].split(), mount[1].split()
            cgroup_mounts.append((Path(head[4]), head[3], tail[0], tail[2].split(",")))

    def folder_of(relative: str, fstype: str, controller: str | None) -> Path | None:
        for point, root, kind, options in cgroup_mounts:
            if kind == fstype and (controller is None or controller in options) \
                    and (relative + "/").startswith(root.rstrip("/") + "/"):
                folder = point / relative[len(root.rstrip("/")):].lstrip("/")
                return folder if (folder / "cgroup.procs").exists() else None
        return None

    found: dict[str, tuple[Path, bool]] = {}
    for line in lines:
        _, controllers, relative = line.split(":", 2)
        for controller in set(controllers.split(",")) & {"pids", "cpu", "cpuacct", "memory"}:  # cgroup v1
            folder = folder_of(relative, "cgroup", controller)
            if folder is not None:
                found[controller] = (folder, False)
    for line in lines:
        _, controllers, relative = line.split(":", 2)
        folder = folder_of(relative, "cgroup2", None) if controllers == "" else None
        if folder is not None:
            try:
                delegated = (folder / "cgroup.subtree_control").read_text().split()
            except OSError:
                delegated = []
            for controller in {"pids", "cpu", "memory"} & set(delegated) - set(found):
                found[controller] = (folder, True)
            if "cpuacct" not in found and delegated:  # v2 accounts CPU time in every cgroup (cpu.stat)
                found["cpuacct"] = (folder, True)
    return found
