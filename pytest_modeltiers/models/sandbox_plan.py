"""Which sandbox a process that runs model code gets: the places it reads and writes, and the
allowances for work that legitimately needs more.

PYTEST_DONT_REWRITE

A pytest session and ``modeltiers train`` build their policy here, so both confine the same way
and name the same things in their headers. The allowances are narrow on purpose:

- ``torch.compile`` runs a C++ compiler (inductor's CPU backend): the compiler driver and the
  programs it runs (``cc1plus``, ``as``, ``collect2``, ``ld``) may be executed and its headers
  and libraries read, nothing else; its cache lives in the sandbox's temp dir.
- A multi-process (DDP) run needs TCP between its ranks: a private network namespace where the
  kernel allows one, else the rendezvous port and the ephemeral ports the ranks bind and connect.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pytest_modeltiers.models.sandbox import SandboxPolicy, default_readable, python_executables

__all__ = [
    "Allowance",
    "compiler_allowance",
    "credential_homes",
    "ddp_allowance",
    "sandbox_policy",
]

#: What marks a folder as a home holding credentials, beside the account's own home directory.
CREDENTIALS = (".ssh", ".aws", ".netrc", ".git-credentials", ".docker", ".kube", ".gnupg")


@dataclass(frozen=True)
class Allowance:
    """More than the default policy gives, for one named need."""

    #: The header's phrase: what is allowed and for what.
    name: str
    readable: tuple[Path, ...] = ()
    executable: tuple[Path, ...] = ()
    tcp_ports: tuple[int, ...] = ()
    private_network: bool = False


def credential_homes() -> set[Path]:
    """Folders never readable as a whole in the sandbox: the account's home directory (from the
    password database, whatever ``$HOME`` says) and ``$HOME`` when it holds credentials. A
    ``$HOME`` pointed at a scratch folder (pytester does that) stays an ordinary folder."""
    import pwd

    homes = {Path(pwd.getpwuid(os.getuid()).pw_dir).resolve()}
    home = Path.home().resolve()
    if any((home / name).exists() for name in CREDENTIALS):
        homes.add(home)
    return homes


def sandbox_policy(
    writable: Iterable[Path], readable: Iterable[Path], allowances: Iterable[Allowance] = ()
) -> SandboxPolicy:
    """The policy for a process writing under ``writable`` and reading ``readable`` beside the
    Python installation, with ``allowances``; a home holding credentials is dropped from the
    readable places (a model folder inside one is readable by itself, not its parents)."""
    homes = credential_homes()
    wanted = [Path(p).resolve() for p in readable]
    kept = [p for p in wanted if not any(p == h or p in h.parents for h in homes)]
    extra = tuple(allowances)
    return SandboxPolicy(
        writable=tuple(Path(p) for p in writable),
        readable=default_readable([*kept, *(p for a in extra for p in a.readable)]),
        executable=(*python_executables(), *(p for a in extra for p in a.executable)),
        tcp_ports=tuple(port for a in extra for port in a.tcp_ports),
        private_network=any(a.private_network for a in extra),
        allowances=tuple(a.name for a in extra),
    )


_COMPILERS = ("c++", "g++", "clang++", "cc", "gcc", "clang")
_HELPERS = ("openssl",)
_COMPILER_PROGRAMS = ("cc1plus", "cc1", "collect2", "as", "ld", "lto-wrapper")


def compiler_allowance() -> Allowance | None:
    """What ``torch.compile``'s C++ compiler needs, or None when no compiler is installed (then
    compiling fails inside the sandbox as it would outside, with the compiler's own message)."""
    drivers = [Path(found) for name in _COMPILERS if (found := shutil.which(name))]
    if not drivers:
        return None
    executable = {Path(os.path.realpath(driver)) for driver in drivers}
    # inductor checksums its precompiled header with openssl
    executable.update(Path(os.path.realpath(p)) for n in _HELPERS if (p := shutil.which(n)))
    readable: set[Path] = set()
    # ``c++`` and ``g++`` (``cc`` and ``gcc``) are usually one program: ask each program once.
    for driver in {Path(os.path.realpath(d)): d for d in drivers}.values():
        for program in _COMPILER_PROGRAMS:
            try:
                done = subprocess.run(
                    [str(driver), f"-print-prog-name={program}"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=False,
                )
            except (OSError, subprocess.SubprocessError):
                continue
            located = done.stdout.strip()
            path = Path(located) if os.sep in located else Path(shutil.which(located) or "")
            if path.is_absolute() and path.is_file():
                executable.add(Path(os.path.realpath(path)))
                readable.add(Path(os.path.realpath(path)).parent)
    for folder in ("/usr/include", "/usr/local/include", "/usr/lib/gcc", "/usr/libexec/gcc"):
        if Path(folder).is_dir():
            readable.add(Path(folder))
    include = sysconfig.get_paths().get("include")
    if include:
        readable.add(Path(include))
    return Allowance(
        name=f"torch.compile's C++ compiler ({', '.join(sorted(p.name for p in executable))})",
        readable=tuple(sorted(readable)),
        executable=tuple(sorted(executable)),
    )


def _ephemeral_ports() -> range:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default range


def ddp_allowance(processes: int, *, private_network: bool = True) -> Allowance:
    """The TCP a ``processes``-rank DDP run needs between its ranks: a private network namespace
    (loopback only) when ``private_network`` and the kernel allows one, else the rendezvous
    port (``MASTER_PORT``, 29500 by default), ephemeral binds (port 0) and the ephemeral range
    the ranks connect to."""
    rendezvous = int(os.environ.get("MASTER_PORT") or 29500)
    ephemeral = _ephemeral_ports()
    ports = f"ports {rendezvous}, 0 and {ephemeral.start}-{ephemeral.stop - 1}"
    where = f"a private network namespace, else {ports}" if private_network else ports
    return Allowance(
        name=f"TCP between the {processes} ranks of a DDP run ({where})",
        tcp_ports=(rendezvous, 0, *ephemeral),
        private_network=private_network,
        # gloo lists the network interfaces and PCI devices to pick the ranks' links.
        readable=tuple(Path(p) for p in ("/sys/class/net", "/sys/bus/pci/devices", "/sys/devices")),
    )
