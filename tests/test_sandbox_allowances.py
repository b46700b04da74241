"""The sandbox around ``modeltiers train`` and what work that needs more gets: a DDP run's ranks
reach each other and nothing else, ``torch.compile`` runs its compiler and nothing else.

Confinement is irreversible: every confined payload runs in a subprocess; the test process is
never confined.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_modeltiers.models.sandbox import available, describe_ports, enter_private_network

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "fixtures" / "sandbox" / "train_probe.py"

needs_landlock = pytest.mark.skipif(not available(), reason="this kernel has no Landlock")

RUNNER = """
import json, sys
from pathlib import Path
args = json.loads(sys.argv[1])
from pytest_modeltiers.models.sandbox import Sandbox
from pytest_modeltiers.models.sandbox_plan import compiler_allowance, ddp_allowance, sandbox_policy
allowances = []
if args["ddp"] is not None:
    allowances.append(ddp_allowance(2, private_network=args["ddp"] == "private"))
if args["compiler"]:
    allowances.append(compiler_allowance())
if args["confine"]:
    out = Path(args["out"])
    sandbox = Sandbox(sandbox_policy([out], [], allowances), scratch=out / "tmp")
    sandbox.enter()
    print(sandbox.describe())
exec(args["payload"], {})
print("DONE")
"""


def run_confined(
    payload: str,
    tmp_path: Path,
    *,
    confine: bool = True,
    ddp: str | None = None,
    compiler: bool = False,
) -> subprocess.CompletedProcess[str]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    args = {
        "payload": payload,
        "confine": confine,
        "out": str(out),
        "ddp": ddp,
        "compiler": compiler,
    }
    return subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(args)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
        check=False,
    )


@pytest.fixture
def host_listener() -> Iterator[int]:
    """A TCP listener on this machine's loopback (outside any sandbox); its port."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def _fork_can_make_private_network() -> bool:
    pid = os.fork()
    if pid == 0:
        os._exit(0 if enter_private_network() else 1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


needs_netns = pytest.mark.skipif(
    not available() or not _fork_can_make_private_network(),
    reason="this kernel refuses a private network namespace to this user",
)

CONNECT = """
import socket
def connect(port):
    with socket.socket() as client:
        client.settimeout(5)
        try:
            client.connect(("127.0.0.1", port))
            return "connected"
        except PermissionError:
            return "blocked"
        except OSError as exc:
            return type(exc).__name__
with socket.socket() as own:
    own.bind(("127.0.0.1", 0))
    own.listen()
    print("OWN", connect(own.getsockname()[1]))
print("HOST", connect({port}))
"""


@needs_netns
def test_ddp_ranks_reach_each_other_in_a_private_network_and_nothing_outside(
    tmp_path: Path, host_listener: int
) -> None:
    free = run_confined(CONNECT.format(port=host_listener), tmp_path, confine=False)
    assert "OWN connected" in free.stdout and "HOST connected" in free.stdout, free.stderr
    walled = run_confined(CONNECT.format(port=host_listener), tmp_path, ddp="private")
    assert walled.returncode == 0, walled.stderr
    assert "a private namespace with only its own loopback" in walled.stdout
    assert "allowed: TCP between the 2 ranks of a DDP run" in walled.stdout
    assert "OWN connected" in walled.stdout
    assert "HOST ConnectionRefusedError" in walled.stdout  # another network: nobody listens


@needs_landlock
def test_without_a_private_network_ddp_gets_exactly_the_rendezvous_and_ephemeral_ports(
    tmp_path: Path,
) -> None:
    """Where no namespace can be made (torchrun's ranks), Landlock allows the ports the ranks
    use; a listener on any other port stays out of reach."""
    with socket.socket() as low:
        for port in range(20000, 30000):  # below the ephemeral range, not the rendezvous port
            try:
                low.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
        low.listen()
        walled = run_confined(CONNECT.format(port=port), tmp_path, ddp="ports")
    assert walled.returncode == 0, walled.stderr
    assert "OWN connected" in walled.stdout  # bound to port 0, connected in the ephemeral range
    assert "HOST blocked" in walled.stdout
    assert "TCP connect/bind except ports 0, 29500, 32768-60999" in walled.stdout


def test_port_lists_are_described_as_ranges() -> None:
    assert describe_ports([29500, 0, *range(32768, 61000)]) == "0, 29500, 32768-60999"
    assert describe_ports([]) == ""


COMPILE = """
import subprocess, shutil
from pathlib import Path
out = Path({out!r})
source = out / "tiny.cpp"
source.write_text("int main() {{ return 0; }}\\n")
# The chain torch.compile's CPU backend runs: driver, cc1plus, as, collect2/ld; openssl dgst
subprocess.run([shutil.which("c++") or shutil.which("g++"), "-O0", str(source), "-o",
                str(out / "tiny")], check=True)
print("COMPILED", (out / "tiny").is_file())
try:
    subprocess.run([str(out / "tiny")], check=False)
    print("BUILT PROGRAM ran")
except PermissionError:
    print("BUILT PROGRAM blocked")
subprocess.run(["openssl", "dgst", "-sha256", str(source)], check=True, capture_output=True)
print("CHECKSUMMED")
try:
    subprocess.run(["/bin/sh", "-c", "true"], check=False)
    print("SHELL ran")
except PermissionError:
    print("SHELL blocked")
"""


@needs_landlock
@pytest.mark.skipif(
    None in (shutil.which("c++") or shutil.which("g++"), shutil.which("openssl")),
    reason="no C++ compiler or openssl here",
)
def test_the_compiler_allowance_runs_the_compiler_chain_and_still_no_shell(
    tmp_path: Path,
) -> None:
    """What ``torch.compile``'s CPU backend executes (the compiler driver and the programs it
    runs, ``openssl`` for its header checksum) works inside the sandbox with the allowance, and
    nothing else does. (``torch.compile`` itself is exercised by hand, see docs/security.md:
    compiling ATen's headers takes a minute of CPU.)"""
    payload = COMPILE.format(out=str(tmp_path / "out"))
    walled = run_confined(payload, tmp_path, compiler=True)
    assert walled.returncode == 0, walled.stderr[-3000:]
    assert "allowed: torch.compile's C++ compiler" in walled.stdout
    assert "COMPILED True" in walled.stdout and "CHECKSUMMED" in walled.stdout
    assert "SHELL blocked" in walled.stdout
    assert "BUILT PROGRAM blocked" in walled.stdout  # loaded as a library by inductor, never run
    without = run_confined(payload, tmp_path)
    assert without.returncode != 0
    assert "PermissionError" in without.stderr


# -- modeltiers train ----------------------------------------------------------------------------


def _train(tmp_path: Path, *extra: str, **config: object) -> subprocess.CompletedProcess[str]:
    (tmp_path / "report").mkdir(exist_ok=True)
    (tmp_path / "outside").mkdir(exist_ok=True)
    shutil.copy(PROBE, tmp_path / "train_probe.py")
    settings = {
        "model_file": "train_probe.py",
        "trust_model": True,  # the scan off: only the sandbox stands in the way
        "epochs": 1,
        "batch_size": 4,
        "max_train_samples": 8,
        "max_val_samples": 4,
        "output_dir": "report",
        "use_gpu": False,
        **config,
    }
    (tmp_path / "train.json").write_text(json.dumps(settings))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PROBE_OUTSIDE": str(tmp_path / "outside" / "escaped.txt"),
        "PROBE_REPORT": str(tmp_path / "report"),
        "FAKE_SERVICE_TOKEN": "do-not-leak",
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest_modeltiers.cli", "train", "--config", "train.json", *extra],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@needs_landlock
@pytest.mark.slow
def test_modeltiers_train_runs_the_model_inside_the_sandbox(tmp_path: Path) -> None:
    done = _train(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "modeltiers train: sandbox Landlock ABI" in done.stderr
    assert "secret-like variables removed: " in done.stderr and "FAKE_SERVICE_TOKEN" in done.stderr
    assert "do-not-leak" not in done.stderr + done.stdout
    assert (tmp_path / "report" / "rank-0.txt").read_text() == "blocked"
    assert not (tmp_path / "outside" / "escaped.txt").exists()


@needs_landlock
@pytest.mark.slow
def test_modeltiers_train_with_the_sandbox_off_warns_and_runs_unconfined(tmp_path: Path) -> None:
    done = _train(tmp_path, "--sandbox", "off")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "WARNING: sandbox off" in done.stderr
    assert (tmp_path / "report" / "rank-0.txt").read_text() == "written"


def test_an_unknown_sandbox_mode_in_the_config_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    done = _train(tmp_path, sandbox="maybe")
    assert done.returncode == 2
    assert "sandbox must be one of auto, on, off, got 'maybe'" in done.stderr
    assert not (tmp_path / "report" / "rank-0.txt").exists()


@needs_netns
@pytest.mark.slow
def test_a_two_process_ddp_run_confines_both_ranks(tmp_path: Path) -> None:
    done = _train(tmp_path, strategy="ddp", devices=2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("allowed: TCP between the 2 ranks of a DDP run") == 2
    for rank in (0, 1):
        assert (tmp_path / "report" / f"rank-{rank}.txt").read_text() == "blocked"
    assert not (tmp_path / "outside" / "escaped.txt").exists()
