"""The sandbox from both sides: each payload works unconfined and is refused once confined.

Confinement is irreversible, so every payload runs in a subprocess that confines itself; the test
process is never confined.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pytest_modeltiers.models.sandbox import available, blocked_message, scrub_secrets

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "sandbox"
EXAMPLE = ROOT / "example_models" / "tiny_gpt.py"

needs_landlock = pytest.mark.skipif(not available(), reason="this kernel has no Landlock")

RUNNER = """
import json, sys
from pathlib import Path
args = json.loads(sys.argv[1])
exec(args["before"], {})
from pytest_modeltiers.models.sandbox import (
    SandboxPolicy, confine, default_readable, python_executables,
)
if args["confine"]:
    report = confine(SandboxPolicy(
        writable=tuple(Path(p) for p in args["writable"]),
        readable=default_readable(),
        executable=python_executables(),
        tcp_ports=tuple(args["ports"]),
    ))
    assert report.confined, report.reason
    print(report.describe())
try:
    exec(args["payload"], {})
except PermissionError as exc:
    print("BLOCKED", exc)
    sys.exit(13)
print("DONE")
"""


def run_payload(
    payload: str,
    tmp_path: Path,
    *,
    confine: bool,
    ports: tuple[int, ...] = (),
    before: str = "",
) -> subprocess.CompletedProcess[str]:
    """Run ``payload`` in a fresh interpreter, confined (writes only to tmp_path/out) or not."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    args = {
        "payload": payload,
        "confine": confine,
        "writable": [str(out)],
        "ports": list(ports),
        "before": before,
    }
    env = {**os.environ, "HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def assert_wall(payload: str, tmp_path: Path, **kwargs: object) -> str:
    """The payload succeeds unconfined and is refused with PermissionError once confined."""
    free = run_payload(payload, tmp_path, confine=False, **kwargs)  # type: ignore[arg-type]
    assert free.returncode == 0 and "DONE" in free.stdout, free.stdout + free.stderr
    walled = run_payload(payload, tmp_path, confine=True, **kwargs)  # type: ignore[arg-type]
    assert walled.returncode == 13, walled.stdout + walled.stderr
    assert "BLOCKED" in walled.stdout
    return walled.stdout


@needs_landlock
def test_a_write_outside_the_allowed_places_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "elsewhere" / "planted.txt"
    victim.parent.mkdir()
    stdout = assert_wall(f"open({str(victim)!r}, 'w').write('x')", tmp_path)
    assert str(victim) in stdout


@needs_landlock
def test_reading_a_file_in_the_home_directory_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "home" / ".ssh" / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_text("PRIVATE KEY")
    assert_wall(f"print(open({str(secret)!r}).read())", tmp_path)


@needs_landlock
def test_starting_a_shell_is_refused(tmp_path: Path) -> None:
    stdout = assert_wall("import subprocess; subprocess.run(['/bin/sh', '-c', 'true'])", tmp_path)
    assert "/bin/sh" in stdout


@needs_landlock
def test_a_tcp_connection_to_a_local_listener_is_refused(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        payload = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)"
        assert_wall(payload, tmp_path)
        allowed = run_payload(payload, tmp_path, confine=True, ports=(port,))
        assert allowed.returncode == 0 and "DONE" in allowed.stdout, allowed.stderr


@needs_landlock
def test_allowed_writes_reads_and_python_still_work(tmp_path: Path) -> None:
    payload = (
        f"from pathlib import Path\n"
        f"target = Path({str(tmp_path / 'out')!r}) / 'sub' / 'result.txt'\n"
        f"target.parent.mkdir()\n"
        f"target.write_text('written')\n"
        f"assert target.read_text() == 'written'\n"
        f"import subprocess, sys, json, email.mime.text\n"
        f"done = subprocess.run([sys.executable, '-c', 'print(6 * 7)'], capture_output=True)\n"
        f"assert done.stdout.strip() == b'42', done\n"
    )
    confined = run_payload(payload, tmp_path, confine=True)
    assert confined.returncode == 0 and "DONE" in confined.stdout, confined.stderr
    assert "sandbox Landlock ABI" in confined.stdout
    assert (tmp_path / "out" / "sub" / "result.txt").read_text() == "written"


@needs_landlock
@pytest.mark.slow
def test_torch_imported_before_confinement_still_runs_a_forward(tmp_path: Path) -> None:
    payload = (
        "import torch, torch.nn.functional\n"
        "from torch import nn\n"
        "model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))\n"
        "loss = model(torch.randn(3, 4)).sum()\n"
        "loss.backward()\n"
        "assert torch.isfinite(loss)\n"
    )
    confined = run_payload(payload, tmp_path, confine=True, before="import torch")
    assert confined.returncode == 0 and "DONE" in confined.stdout, confined.stderr


def test_without_landlock_the_report_says_why(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from pytest_modeltiers.models import sandbox\n"
        "sys.platform = 'darwin'\n"
        "report = sandbox.confine(sandbox.SandboxPolicy())\n"
        "assert not report.confined and not sandbox.available()\n"
        "print(report.describe())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "sandbox unavailable (Landlock is Linux-only" in done.stdout
    assert "only the static scan stands between the model and this machine" in done.stdout


def test_scrub_secrets_removes_credentials_and_returns_only_their_names() -> None:
    environ = {
        "HF_TOKEN": "hf_value",
        "GITHUB_TOKEN": "ghp_value",
        "AWS_ACCESS_KEY_ID": "AKIA",
        "AWS_REGION": "eu-west-1",
        "OPENAI_API_KEY": "sk-value",
        "DB_PASSWORD": "hunter2",
        "MY_SERVICE_SECRET": "s",
        "PATH": "/usr/bin",
        "HOME": "/root",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "0",
    }
    removed = scrub_secrets(environ)
    assert removed == sorted(
        [
            "AWS_ACCESS_KEY_ID",
            "AWS_REGION",
            "DB_PASSWORD",
            "GITHUB_TOKEN",
            "HF_TOKEN",
            "MY_SERVICE_SECRET",
            "OPENAI_API_KEY",
        ]
    )
    assert environ == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "0",
    }
    assert not any("value" in name for name in removed)


def test_a_permission_error_is_named_as_the_sandbox_wall() -> None:
    exc = PermissionError(13, "Permission denied", "/root/.ssh/id_rsa")
    assert blocked_message(exc) is None, "not confined: the file system's own refusal"
    assert blocked_message(exc, sandboxed=True) == (
        "the model tried to use /root/.ssh/id_rsa: outside the sandbox; see --modeltiers-sandbox"
    )
    assert blocked_message(ValueError("x"), sandboxed=True) is None


# -- the option, as users meet it ----------------------------------------------------------------


def _fake_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home directory with an SSH key, outside every place the inner session may write."""
    home = tmp_path_factory.mktemp("home")
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_rsa").write_text("PRIVATE KEY\n")
    monkeypatch.setenv("HOME", str(home))
    return home


@needs_landlock
@pytest.mark.parametrize(
    ("fixture", "blocked"),
    [("writes_home.py", "planted-by-model.txt"), ("reads_ssh_key.py", ".ssh/id_rsa")],
)
def test_a_payload_hitting_the_wall_is_a_usage_error_naming_it(
    pytester: pytest.Pytester,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    fixture: str,
    blocked: str,
) -> None:
    home = _fake_home(tmp_path_factory, monkeypatch)
    model = Path(shutil.copy(FIXTURES / fixture, pytester.path))
    free = pytester.runpytest_subprocess(
        "--co", f"--model={model}", "--trust-model", "--modeltiers-sandbox=off"
    )
    assert free.ret == pytest.ExitCode.OK, free.stderr.str()
    (home / "planted-by-model.txt").unlink(missing_ok=True)

    result = pytester.runpytest_subprocess(
        "--co", f"--model={model}", "--trust-model", "--modeltiers-sandbox", "on"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert f"{home / blocked}: outside the sandbox; see --modeltiers-sandbox" in err, err
    assert "INTERNALERROR" not in err + result.stdout.str()
    assert not (home / "planted-by-model.txt").exists()


def test_sandbox_off_is_a_warning_in_the_header(pytester: pytest.Pytester) -> None:
    model = Path(shutil.copy(EXAMPLE, pytester.path))
    result = pytester.runpytest_subprocess(
        "--co", f"--model={model}", "--modeltiers-sandbox", "off"
    )
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    result.stdout.fnmatch_lines(["modeltiers: WARNING: --modeltiers-sandbox off: *all of your*"])


@needs_landlock
@pytest.mark.slow
def test_the_example_model_passes_tier1_inside_the_sandbox(
    pytester: pytest.Pytester,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_home(tmp_path_factory, monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    model = Path(shutil.copy(EXAMPLE, pytester.path))
    report = pytester.path / "reports" / "health.json"
    result = pytester.runpytest_subprocess(
        f"--model={model}",
        "--trust-model",
        "--modeltiers-sandbox=on",
        "-m",
        "tier1",
        f"--modeltiers-report={report}",
        f"--junitxml={pytester.path / 'junit.xml'}",
    )
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.OK, out + result.stderr.str()
    result.stdout.fnmatch_lines(
        [
            "modeltiers: sandbox Landlock ABI * writes only under *; secret-like variables "
            "removed: *HF_TOKEN*"
        ]
    )
    assert "hf_not_a_real_token" not in out
    assert json.loads(report.read_text())["checks"]
    assert (pytester.path / "junit.xml").is_file()


@needs_landlock
def test_a_payload_blocked_inside_a_check_fails_that_check(
    pytester: pytest.Pytester,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = _fake_home(tmp_path_factory, monkeypatch)
    model = Path(shutil.copy(FIXTURES / "writes_in_forward.py", pytester.path))
    args = [f"--model={model}", "--trust-model", "-m", "tier1", "-k", "test_output_finite"]
    free = pytester.runpytest_subprocess(*args, "--modeltiers-sandbox=off")
    assert free.ret == pytest.ExitCode.OK, free.stdout.str()
    (home / "leaked.txt").unlink()

    result = pytester.runpytest_subprocess(*args, "--modeltiers-sandbox=on")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [f"*PermissionError*{home / 'leaked.txt'}*outside the sandbox; see --modeltiers-sandbox*"]
    )
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    assert not (home / "leaked.txt").exists()


NO_LANDLOCK_CONFTEST = """
from pytest_modeltiers.models import sandbox

sandbox.landlock_abi = lambda: (None, "kernel 4.19 has no Landlock (needs Linux 5.13+)")
"""


def test_on_without_landlock_is_a_usage_error_and_auto_says_why(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(NO_LANDLOCK_CONFTEST)
    model = Path(shutil.copy(EXAMPLE, pytester.path))
    on = pytester.runpytest_subprocess("--co", f"--model={model}", "--modeltiers-sandbox=on")
    assert on.ret == pytest.ExitCode.USAGE_ERROR
    on.stderr.fnmatch_lines(
        ["*--modeltiers-sandbox on: kernel 4.19 has no Landlock*--modeltiers-sandbox auto*"]
    )
    auto = pytester.runpytest_subprocess("--co", f"--model={model}", "--modeltiers-sandbox=auto")
    assert auto.ret == pytest.ExitCode.OK, auto.stderr.str()
    auto.stdout.fnmatch_lines(
        [
            "modeltiers: sandbox unavailable (kernel 4.19 has no Landlock*): only the static "
            "scan stands between the model and this machine"
        ]
    )


@needs_landlock
def test_auto_is_the_default_and_a_subprocess_session_is_confined(
    pytester: pytest.Pytester,
) -> None:
    result = pytester.runpytest_subprocess("--co", f"--model={EXAMPLE}")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["modeltiers: sandbox Landlock ABI *; writes only under *"])


@needs_landlock
def test_a_session_inside_another_ones_process_is_not_confined(pytester: pytest.Pytester) -> None:
    auto = pytester.runpytest("--co", f"--model={EXAMPLE}")
    assert auto.ret == pytest.ExitCode.OK
    auto.stdout.fnmatch_lines(["modeltiers: sandbox not entered: this session runs inside*"])
    on = pytester.runpytest("--co", f"--model={EXAMPLE}", "--modeltiers-sandbox=on")
    assert on.ret == pytest.ExitCode.USAGE_ERROR
    assert "runs inside another pytest session's process" in on.stderr.str()
    # This test process was not confined by either run: it can still write outside them.
    outside = Path(tempfile.mkdtemp()) / "still-writable.txt"
    outside.write_text("ok")


@needs_landlock
@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(
            "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
            ".sendto(b'x', ('127.0.0.1', 9))",
            id="udp",
        ),
        pytest.param(
            "import socket\n"
            "socket.socket(socket.AF_INET6, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)",
            id="udp6-with-flags",
        ),
        pytest.param(
            "import ctypes, os\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "if libc.unshare(0x10000000) != 0:\n"  # CLONE_NEWUSER
            "    raise PermissionError(ctypes.get_errno(), 'unshare(CLONE_NEWUSER)')",
            id="new-user-namespace",
        ),
        pytest.param(
            "import ctypes\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "if libc.ptrace(0, 0, None, None) != 0:\n"  # PTRACE_TRACEME
            "    raise PermissionError(ctypes.get_errno(), 'ptrace(PTRACE_TRACEME)')",
            id="ptrace",
        ),
    ],
)
def test_what_landlock_does_not_govern_is_refused_by_seccomp(tmp_path: Path, payload: str) -> None:
    stdout = assert_wall(payload, tmp_path)
    assert "seccomp:" in stdout  # the report names the filter


@needs_landlock
def test_a_unix_socket_outside_the_sandbox_is_out_of_reach(tmp_path: Path) -> None:
    """Landlock does not judge ``connect`` to a socket file (``/var/run/docker.sock`` would be
    root on the host): new Unix sockets are refused, pairs still work."""
    path = tmp_path / "service.sock"
    listen = (
        "import builtins, socket\n"
        "builtins.listener = socket.socket(socket.AF_UNIX)\n"
        f"builtins.listener.bind({str(path)!r}); builtins.listener.listen()\n"
    )
    connect = f"import socket; socket.socket(socket.AF_UNIX).connect({str(path)!r})"
    free = run_payload(connect, tmp_path, confine=False, before=listen)
    assert "DONE" in free.stdout, free.stderr
    path.unlink()
    walled = run_payload(connect + "\nsocket.socketpair()", tmp_path, confine=True, before=listen)
    assert walled.returncode == 13 and "BLOCKED" in walled.stdout, walled.stdout + walled.stderr
    assert "new Unix sockets" in walled.stdout


@needs_landlock
def test_ordinary_work_passes_the_seccomp_filter(tmp_path: Path) -> None:
    payload = (
        "import socket, subprocess, sys, threading, torch\n"
        "socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()\n"
        "socket.socketpair()\n"
        "t = threading.Thread(target=lambda: torch.ones(64, 64) @ torch.ones(64, 64)); t.start()\n"
        "t.join()\n"
        "subprocess.run([sys.executable, '-c', 'pass'], check=True)\n"
    )
    done = run_payload(payload, tmp_path, confine=True)
    assert done.returncode == 0 and "DONE" in done.stdout, done.stdout + done.stderr


@needs_landlock
@pytest.mark.slow
@pytest.mark.parametrize(
    "model_file",
    [EXAMPLE, ROOT / "fixtures" / "third_party" / "hf_gpt2.py"],
    ids=["example-tiny-gpt", "hugging-face-gpt2"],
)
def test_every_built_tier_passes_unchanged_inside_the_sandbox_under_xdist(
    pytester: pytest.Pytester,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    model_file: Path,
) -> None:
    """Tiers 1, 3, 4 and 5 (training runs, exports, profiles) need nothing the sandbox
    refuses: the controller and both workers confined, every check passes or waits for data."""
    _fake_home(tmp_path_factory, monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = Path(shutil.copy(model_file, pytester.path))
    report = pytester.path / "reports" / "health.json"
    result = pytester.runpytest_subprocess(
        f"--model={model}",
        "--modeltiers-sandbox=on",
        "-m",
        "tier1 or tier3 or tier4 or tier5",
        "-n",
        "2",
        f"--modeltiers-report={report}",
    )
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.OK, out + result.stderr.str()
    assert "modeltiers: sandbox Landlock ABI" in out
    checks = json.loads(report.read_text())["checks"]
    tiers = {check["tier"] for check in checks}
    assert {1, 3, 4, 5} <= tiers, tiers
    assert all(c["status"] in ("passed", "skipped") for c in checks), [
        (c["check_name"], c["status"], c["message"]) for c in checks if c["status"] != "passed"
    ]
