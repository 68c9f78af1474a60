"""The grading sandbox: what a submission can see, write and reach, its limits, and that nothing survives it.

Each test runs a tiny Python script through run_sandboxed. The isolation tests need a working
bubblewrap (./course installs it on Linux); the fallback tests run everywhere.
"""
import os
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from autograde import sandbox
from autograde.sandbox import Limits, SandboxWarning, run_sandboxed

REPO = Path(__file__).resolve().parents[1]

needs_isolation = pytest.mark.skipif(sandbox.isolation() is None, reason="no usable bubblewrap here")


def run_script(code: str, workdir: Path, **kwargs) -> sandbox.SandboxResult:
    return run_sandboxed([sys.executable, "-c", textwrap.dedent(code)], workdir, **kwargs)


def processes_with(marker: str) -> list[int]:
    """The pids whose command line holds marker (a string only the test's own scripts contain)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def cgroup_controllers() -> frozenset[str]:
    """The controllers a run's cgroup gets here (pids, cpu, memory: those available and writable)."""
    cgroup = sandbox._RunCgroup.create(Limits())
    cgroup.kill_and_remove()
    return cgroup.controllers


def fork_limit_holds() -> bool:
    """A fork bomb is held when the run gets a pids cgroup, or RLIMIT_NPROC binds (not root)."""
    return "pids" in cgroup_controllers() or os.getuid() != 0


def needs_cgroup(controller: str):
    return pytest.mark.skipif(controller not in cgroup_controllers(),
                              reason=f"no writable {controller} cgroup controller here")


# The script reports what it could do with each path: 'read', 'wrote' or the error's name.
PROBE = """
import sys
def probe(action, path):
    try:
        if action == "read":
            open(path).read()
        else:
            open(path, "w").write("x")
        print(action, path, "ok")
    except OSError as error:
        print(action, path, type(error).__name__)
"""


@needs_isolation
def test_sees_only_workdir_and_the_whitelist(tmp_path_factory):
    secret = tmp_path_factory.mktemp("other_submission") / "answers.txt"
    secret.write_text("not yours")
    workdir = tmp_path_factory.mktemp("work")
    (workdir / "mine.txt").write_text("yours")
    targets = [REPO / "README.md", REPO / "solutions", Path("/root/.bashrc"), secret]
    result = run_script(PROBE + textwrap.dedent(f"""
        for path in {[str(t) for t in targets]!r}:
            probe("read", path)
        probe("read", "mine.txt")
        probe("write", "new.txt")
        import os
        print("root holds", sorted(os.listdir("/root")) if os.path.isdir("/root") else [])
        try:
            import course_lib
            print("course_lib imported from", course_lib.__file__)
        except ImportError:
            print("course_lib not importable")
        """), workdir)
    assert result.isolated and result.returncode == 0, result.output
    for target in targets:
        assert f"read {target} FileNotFoundError" in result.output, result.output
    assert "read mine.txt ok" in result.output and "write new.txt ok" in result.output
    assert (workdir / "new.txt").read_text() == "x"
    # Only the way to a bound Python installation (pyenv's, say) may show in /root.
    assert set(eval(result.output.split("root holds ")[1].splitlines()[0])) <= {".pyenv"}
    assert "course_lib not importable" in result.output  # the editable install points into the checkout


@needs_isolation
def test_cannot_write_outside_workdir(tmp_path):
    result = run_script(PROBE + textwrap.dedent(f"""
        probe("write", {str(Path(sys.prefix) / "planted.py")!r})
        probe("write", "/usr/planted")
        probe("write", "/etc/planted")
        import subprocess
        remount = subprocess.run(["mount", "-o", "remount,bind,rw", "/usr"], capture_output=True)
        print("remount exit", remount.returncode)
        nested = subprocess.run(["unshare", "--user", "true"], capture_output=True)
        print("nested user namespace exit", nested.returncode)
        """), tmp_path)
    assert result.returncode == 0, result.output
    for path in (Path(sys.prefix) / "planted.py", "/usr/planted", "/etc/planted"):
        assert f"write {path} OSError" in result.output or f"write {path} PermissionError" in result.output, \
            result.output
        assert not Path(path).exists()
    assert "remount exit 0" not in result.output, "the sandbox kept CAP_SYS_ADMIN: it can remount /usr rw"
    if "--disable-userns" in sandbox._bwrap_help():
        assert "nested user namespace exit 0" not in result.output, "it may create user namespaces of its own"


@needs_isolation
def test_no_network_but_loopback_works(tmp_path):
    result = run_script("""
        import socket, threading
        try:
            socket.create_connection(("1.1.1.1", 53), timeout=2)
            print("outside reached")
        except OSError as error:
            print("outside refused", error)
        server = socket.create_server(("127.0.0.1", 0))
        def answer():
            connection, _ = server.accept()
            connection.sendall(connection.recv(16).upper())
        threading.Thread(target=answer).start()
        client = socket.create_connection(server.getsockname(), timeout=2)
        client.sendall(b"ping")
        print("loopback", client.recv(16).decode())
        """, tmp_path)
    assert "outside refused" in result.output, result.output
    assert "loopback PING" in result.output, result.output


@needs_isolation
def test_rlimits_apply_inside(tmp_path):
    limits = Limits(memory_bytes=3 * 2**30, cpu_seconds=77, file_bytes=2**20)
    result = run_script("""
        import resource
        print([resource.getrlimit(getattr(resource, name))[0] for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE")])
        try:
            with open("big", "wb") as big:
                big.write(bytes(2**20 + 1))
        except OSError as error:
            print("write stopped:", error)
        try:
            for name in ("/tmp/a", "/tmp/b"):  # each under the file limit, together past /tmp's size
                with open(name, "wb") as small:
                    small.write(bytes(2**20 - 4096))
            print("tmp holds 2 MB")
        except OSError as error:
            print("tmp full:", error)
        """, tmp_path, limits=limits)
    assert str([3 * 2**30, 77, 2**20]) in result.output, result.output
    # Python ignores SIGXFSZ, so the write past the limit fails with EFBIG instead of killing it.
    assert "File too large" in result.output and (tmp_path / "big").stat().st_size == 2**20, result.output
    if "--size" in sandbox._bwrap_help():
        assert "tmp full: [Errno 28] No space left on device" in result.output, result.output


@needs_isolation
def test_memory_bomb_fails_inside(tmp_path):
    result = run_script("""
        try:
            hog = bytearray(8 * 2**30)
            print("allocated 8 GB")
        except MemoryError:
            print("MemoryError")
        """, tmp_path)
    assert "MemoryError" in result.output and "allocated" not in result.output, result.output


def run_fork_bomb(tmp_path):
    marker = f"forkbomb-{uuid.uuid4().hex}"
    start = time.monotonic()
    result = run_script(f"""
        import os  # {marker}
        refused = False
        while True:
            try:
                os.fork()
            except OSError:
                if not refused:
                    print("fork refused", flush=True)
                    refused = True
        """, tmp_path, limits=Limits(wall_seconds=3, processes=64))
    took = time.monotonic() - start
    assert result.timed_out and result.returncode is None
    assert "fork refused" in result.output, "the process limit did not stop the fork bomb"
    assert took < 10, f"the run took {took:.1f} s to end"
    assert processes_with(marker) == []
    return result


@needs_isolation
@pytest.mark.skipif(not fork_limit_holds(), reason="root without a writable pids cgroup: no fork limit holds")
def test_fork_bomb_is_contained(tmp_path):
    assert run_fork_bomb(tmp_path).isolated


@pytest.mark.skipif(not fork_limit_holds(), reason="root without a writable pids cgroup: no fork limit holds")
def test_fallback_contains_a_fork_bomb(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "isolation", lambda: None)
    with pytest.warns(SandboxWarning):
        assert not run_fork_bomb(tmp_path).isolated


@needs_isolation
def test_nothing_started_inside_survives(tmp_path):
    marker = f"background-{uuid.uuid4().hex}"
    start = time.monotonic()
    result = run_script(f"""
        import subprocess, sys
        sleeper = "import time; time.sleep(1000)  # {marker}"
        subprocess.Popen([sys.executable, "-c", sleeper])
        subprocess.Popen([sys.executable, "-c", sleeper], start_new_session=True)  # left the group too
        print("started")
        """, tmp_path)
    assert result.returncode == 0 and "started" in result.output, result.output
    assert time.monotonic() - start < 10
    assert processes_with(marker) == []


@needs_isolation
def test_wall_limit_kills_an_infinite_loop(tmp_path):
    start = time.monotonic()
    result = run_script("while True: pass", tmp_path, limits=Limits(wall_seconds=1))
    assert result.timed_out and result.returncode is None and result.isolated
    assert time.monotonic() - start < 5


@needs_isolation
def test_torch_imports_under_the_memory_limit(tmp_path):
    result = run_script("import torch; print('sum', torch.ones(3).sum().item())", tmp_path)
    assert result.returncode == 0 and "sum 3.0" in result.output, result.output


@pytest.mark.filterwarnings("ignore::autograde.sandbox.SandboxWarning")
def test_output_keeps_its_end(tmp_path):
    result = run_script("print('x' * 100_000 + 'END')", tmp_path)
    assert len(result.output) == sandbox.OUTPUT_CHARS and result.output.rstrip().endswith("xEND")


def test_fallback_warns_and_still_limits(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "isolation", lambda: None)
    marker = f"fallback-{uuid.uuid4().hex}"
    limits = Limits(memory_bytes=2 * 2**30, cpu_seconds=55, file_bytes=2**20, wall_seconds=20)
    with pytest.warns(SandboxWarning, match="WITHOUT isolation"):
        result = run_script(f"""
            import resource, subprocess, sys
            print([resource.getrlimit(getattr(resource, n))[0] for n in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE")])
            try:
                hog = bytearray(4 * 2**30)
            except MemoryError:
                print("MemoryError")
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)  # {marker}"])
            """, tmp_path, limits=limits)
    assert not result.isolated and result.returncode == 0, result.output
    assert str([2 * 2**30, 55, 2**20]) in result.output and "MemoryError" in result.output, result.output
    assert processes_with(marker) == []


def test_fallback_wall_limit_kills_the_group(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "isolation", lambda: None)
    marker = f"fallback-loop-{uuid.uuid4().hex}"
    start = time.monotonic()
    with pytest.warns(SandboxWarning):
        result = run_script(f"""
            import os  # {marker}
            os.fork()
            while True:
                pass
            """, tmp_path, limits=Limits(wall_seconds=1))
    assert result.timed_out and result.returncode is None and not result.isolated
    assert time.monotonic() - start < 5
    assert processes_with(marker) == []


@needs_cgroup("cpu")
@pytest.mark.filterwarnings("ignore::autograde.sandbox.SandboxWarning")
def test_cpu_cap_holds_for_the_whole_run(tmp_path):
    # Two processes spin for 2 s of wall time: uncapped they could use up to 4 CPU seconds.
    result = run_script("""
        import os, resource, time
        start = time.monotonic()
        child = os.fork()
        while time.monotonic() - start < 2:
            pass
        if child == 0:
            os._exit(0)
        os.waitpid(child, 0)
        used = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        print("cpu seconds", sum(u.ru_utime + u.ru_stime for u in used))
        """, tmp_path, limits=Limits(cpus=0.5))
    assert result.returncode == 0, result.output
    used = float(result.output.split("cpu seconds ")[1].split()[0])
    assert used < 1.4, f"{used:.2f} CPU seconds in 2 s at cpus=0.5"


@needs_cgroup("memory")
@pytest.mark.filterwarnings("ignore::autograde.sandbox.SandboxWarning")
def test_memory_cap_holds_for_the_whole_run(tmp_path):
    # Three processes, each under RLIMIT_AS, fill 1 GiB each at once: together past the 1.5 GiB.
    result = run_script("""
        import subprocess, sys
        hog = "import time; hog = b'x' * 2**30; time.sleep(2)"
        children = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(3)]
        print("exits", sorted(child.wait() for child in children))
        """, tmp_path, limits=Limits(memory_total_bytes=3 * 2**29))
    assert result.returncode == 0, result.output  # the kernel picked the big ones, not their parent
    exits = eval(result.output.split("exits ")[1].splitlines()[0])
    assert exits.count(-9) >= 1 and exits.count(0) <= 1, exits  # OOM-killed; at most one fits
    assert len(b"y" * 2**30) == 2**30  # and the grader itself still allocates freely


@pytest.mark.filterwarnings("ignore::autograde.sandbox.SandboxWarning")
def test_no_cgroup_is_left_behind(tmp_path, monkeypatch):
    created = []
    original = sandbox._RunCgroup.create
    monkeypatch.setattr(sandbox._RunCgroup, "create",
                        classmethod(lambda cls, limits: created.append(original(limits)) or created[-1]))
    marker = f"left-behind-{uuid.uuid4().hex}"
    result = run_script(f"""
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)  # {marker}"], start_new_session=True)
        print("started")
        """, tmp_path, limits=Limits(wall_seconds=20))
    assert result.returncode == 0 and "started" in result.output, result.output
    (cgroup,) = created
    assert cgroup.controllers == cgroup_controllers()
    assert [folder for folder in cgroup.folders.values() if folder.exists()] == []
    assert processes_with(marker) == []
