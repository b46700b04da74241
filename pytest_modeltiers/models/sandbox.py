"""An operating-system wall around model code: Landlock, entered irreversibly, and secrets removed.

PYTEST_DONT_REWRITE

The static safety scan reads the model file; Python is too dynamic for a scan to be complete, so
the guarantee comes from the kernel. ``confine(policy)`` restricts the calling process (and every
process it starts afterwards) with Landlock (Linux 5.13 and later), through the raw system calls:
no library to install, nothing on other platforms. Rights are chosen by the kernel's Landlock ABI:

- ABI 1: files (read, write, execute, make, remove); ABI 2 adds renames across folders (refer);
  ABI 3 truncation; ABI 5 device ioctls;
- ABI 4: TCP connect and bind, each denied except the policy's ports;
- ABI 6: signals and abstract Unix sockets scoped to the sandbox.

Confinement cannot be undone: call it only in a process that runs model code from then on.
Landlock does not see UDP or raw sockets, ``ptrace`` of processes inside the sandbox, mounts,
``bpf`` or ``keyctl``: the seccomp filter of ``seccomp.py`` refuses those.

A multi-process (DDP) run needs its ranks to reach each other over TCP, on ports chosen at run
time. Landlock can only allow ports one by one, so such a run gets a private network namespace
instead (only its own loopback: the ranks reach each other and nothing else), and where the
kernel refuses one, exactly the ports the ranks use: the rendezvous port, ephemeral binds and
the ephemeral range.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import fnmatch
import os
import platform
import socket
import struct
import sys
import tempfile
import threading
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from pytest_modeltiers.errors import ModelSpecError
from pytest_modeltiers.models import seccomp

__all__ = [
    "Sandbox",
    "SandboxPolicy",
    "SandboxReport",
    "available",
    "blocked_message",
    "confine",
    "confined",
    "default_readable",
    "describe_ports",
    "enter_private_network",
    "inside_private_network",
    "landlock_abi",
    "python_executables",
    "scrub_secrets",
]

# -- the kernel's interface (include/uapi/linux/landlock.h) -------------------------------------

_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446), "arm64": (444, 445, 446)}
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2
_PR_SET_NO_NEW_PRIVS = 38
#: prctl's system call number, called like the others so that errno is read the same way.
_SYS_PRCTL = {"x86_64": 157, "aarch64": 167, "arm64": 167}

FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13
FS_TRUNCATE = 1 << 14
FS_IOCTL_DEV = 1 << 15
NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

#: Filesystem rights the kernel knows, by the ABI that introduced them.
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
#: Rights that apply to a file (the others only to folders).
_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
_READ = FS_READ_FILE | FS_READ_DIR
_WRITE = (
    _READ
    | FS_WRITE_FILE
    | FS_REMOVE_DIR
    | FS_REMOVE_FILE
    | FS_MAKE_DIR
    | FS_MAKE_REG
    | FS_MAKE_SOCK
    | FS_MAKE_FIFO
    | FS_MAKE_SYM
    | FS_REFER
    | FS_TRUNCATE
)
_DEVICE = FS_READ_FILE | FS_WRITE_FILE | FS_IOCTL_DEV


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


#: What ``confine`` enforced on this process (it cannot be undone).
_ENTERED: SandboxReport | None = None

#: The ruleset attribute's size per ABI: the kernel refuses fields it does not know.
_RULESET_SIZE = {1: 8, 4: 16, 6: 24}


# -- what is allowed -----------------------------------------------------------------------------

#: Files outside the Python installation that Python, torch and its libraries read at run time.
_SYSTEM_READABLE = (
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/os-release",
    "/etc/mime.types",
    "/etc/ssl/certs",
    "/usr/share/zoneinfo",
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
)
#: The process's own /proc entries that Python and torch read; not ``environ``, which still
#: holds the variables ``scrub_secrets`` removed.
_PROC_SELF = ("status", "statm", "stat", "maps", "fd", "task", "cgroup", "mountinfo", "limits")
_DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/dev/full")
_DEVICE_PATTERNS = ("nvidia*", "dri")


@dataclass(frozen=True)
class SandboxPolicy:
    """What confined code may still do: everything else on the filesystem and TCP is denied."""

    writable: tuple[Path, ...] = ()
    readable: tuple[Path, ...] = ()
    executable: tuple[Path, ...] = ()
    tcp_ports: tuple[int, ...] = ()
    #: Run in a private network namespace (loopback only) and leave TCP to it; where the kernel
    #: refuses one, ``tcp_ports`` are the only TCP ports allowed, as without it.
    private_network: bool = False
    #: What the policy allows beyond the defaults and why, one phrase each, for the header.
    allowances: tuple[str, ...] = ()


@dataclass
class SandboxReport:
    """What ``confine`` did: by which mechanism and ABI, or why nothing."""

    confined: bool
    mechanism: str | None = None
    abi: int | None = None
    reason: str | None = None
    writable: tuple[Path, ...] = ()
    #: The rights that were enforced (``filesystem``, ``tcp``, ``scoped signals`` ...).
    covers: tuple[str, ...] = ()
    #: Paths of the policy that do not exist (nothing to allow).
    missing: list[Path] = field(default_factory=list)
    allowances: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for a session header."""
        if not self.confined:
            return (
                f"sandbox unavailable ({self.reason}): only the static scan stands between "
                "the model and this machine"
            )
        places = ", ".join(str(p) for p in self.writable) or "nowhere"
        allowed = "".join(f"; allowed: {allowance}" for allowance in self.allowances)
        return (
            f"sandbox {self.mechanism} ABI {self.abi} ({', '.join(self.covers)}); "
            f"writes only under {places}{allowed}"
        )


#: Cache locations that default to the home directory, moved into the sandbox's temp dir.
_CACHE_VARIABLES = {
    "XDG_CACHE_HOME": "cache",
    "MPLCONFIGDIR": "matplotlib",
    "TORCHINDUCTOR_CACHE_DIR": "torchinductor",
    "TRITON_CACHE_DIR": "triton",
}


@dataclass
class Sandbox:
    """A session's sandbox, entered once, right before the first model code runs.

    Entering removes secret-like environment variables, points the temp dir (``TMPDIR`` and
    ``tempfile``) and the caches that default to the home or the system temp dir
    (``XDG_CACHE_HOME``, ``MPLCONFIGDIR``, inductor's and Triton's) at ``scratch`` (one of the
    writable places: the system temp dir is not), and confines the process.
    """

    policy: SandboxPolicy
    scratch: Path
    report: SandboxReport | None = None
    scrubbed: list[str] = field(default_factory=list)

    def enter(self) -> None:
        """Confine this process; later calls do nothing (confinement is for the process)."""
        if self.report is not None:
            return
        if threading.current_thread() is not threading.main_thread():
            # Landlock confines the calling thread: the main thread would stay outside.
            raise ModelSpecError(
                "the sandbox must be entered from the main thread, and the model is being "
                f"loaded in {threading.current_thread().name!r}; load it from the main thread "
                "or pass --modeltiers-sandbox off"
            )
        self.scrubbed = scrub_secrets(os.environ)
        self.scratch.mkdir(parents=True, exist_ok=True)
        os.environ["TMPDIR"] = str(self.scratch)
        tempfile.tempdir = str(self.scratch)
        # Libraries' caches under the (unwritable) home go to the temp dir instead.
        for variable, folder in _CACHE_VARIABLES.items():
            os.environ[variable] = str(self.scratch / folder)
        self.report = confine(self.policy)

    def describe(self) -> str:
        """The header's line: what is confined, by what, and which secrets were removed."""
        if self.report is None:
            return "sandbox not entered yet (no model code has run)"
        names = ", ".join(self.scrubbed) or "none found"
        return f"{self.report.describe()}; secret-like variables removed: {names}"


def _syscall(number: int, *args: object) -> int:
    """``syscall(number, *args)``; a negative result leaves the error in ``ctypes.get_errno``."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return int(libc.syscall(ctypes.c_long(number), *args))


def _checked(call: str, result: int) -> int:
    """``result``, or ``OSError`` naming ``call`` when the kernel refused it."""
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{call} failed: {os.strerror(code)}")
    return result


def landlock_abi() -> tuple[int | None, str | None]:
    """The kernel's Landlock ABI version, or None and why there is none."""
    if sys.platform != "linux":
        return None, f"Landlock is Linux-only; this is {platform.system() or sys.platform}"
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        return None, f"Landlock system calls are not known here for {platform.machine()}"
    abi = _syscall(numbers[0], None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    if abi < 0:
        code = ctypes.get_errno()
        if code == errno.ENOSYS:
            return None, f"kernel {platform.release()} has no Landlock (needs Linux 5.13+)"
        if code == errno.EOPNOTSUPP:
            return None, f"Landlock is disabled on kernel {platform.release()} (lsm= boot option)"
        return None, f"Landlock query failed: {os.strerror(code)}"
    return abi, None


def available() -> bool:
    """Whether ``confine`` can confine this process."""
    return landlock_abi()[0] is not None


def python_executables() -> tuple[Path, ...]:
    """The interpreter files (the venv's and its base's), the only programs confined code runs."""
    found = {Path(os.path.realpath(sys.executable))}
    base = getattr(sys, "_base_executable", None)
    if base:
        found.add(Path(os.path.realpath(base)))
    # execve also opens the program's ELF interpreter for execution.
    for folder in ("/lib64", "/lib", *(str(p) for p in Path("/lib").glob("*-linux-gnu*"))):
        found.update(Path(os.path.realpath(Path(folder, n))) for n in _matching(folder, "ld-*.so*"))
    return tuple(sorted(found))


def default_readable(extra: Iterable[Path] = ()) -> tuple[Path, ...]:
    """The Python installation, its import path outside the home, the system libraries and
    configuration files that Python and torch read, plus ``extra``.

    Not the system temp dir: every process shares it (other runs' files, other users' sockets);
    the session's own temp dir is one of its writable places instead.
    """
    home = Path.home().resolve()
    places: list[Path] = [Path(sys.prefix), Path(sys.base_prefix)]
    places.append(Path(__file__).resolve().parents[1])  # this package, even installed editable
    for entry in sys.path:
        path = Path(entry or os.getcwd()).resolve()
        if path.is_dir() and not (path == home or home in path.parents):
            places.append(path)
    places.extend(Path(p) for p in _SYSTEM_READABLE)
    places.extend(Path(f"/proc/{os.getpid()}/{name}") for name in _PROC_SELF)
    places.extend(extra)
    return tuple(dict.fromkeys(places))


def confine(policy: SandboxPolicy) -> SandboxReport:
    """Confine this process and its future children to ``policy``, irreversibly.

    Landlock restricts the calling thread and the threads and processes it starts afterwards:
    call it from the thread that runs the model, before the model starts any. Returns what was
    confined, or why nothing was (not Linux, no Landlock); a kernel call that fails after the
    query raises ``OSError`` (half a wall must not pass for a wall).
    """
    abi, reason = landlock_abi()
    if abi is None:
        return SandboxReport(confined=False, reason=reason)
    create_ruleset, add_rule, restrict_self = _SYSCALLS[platform.machine()]
    fs_rights = _FS_BY_ABI[max(v for v in _FS_BY_ABI if v <= abi)]
    attr = _RulesetAttr(handled_access_fs=fs_rights)
    covers = ["filesystem"]
    private = policy.private_network and enter_private_network()
    tcp_ports = () if private else policy.tcp_ports
    if private:
        covers.append("network: a private namespace with only its own loopback")
    elif abi >= 4:
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP
        ports = describe_ports(tcp_ports)
        covers.append(f"TCP connect/bind except ports {ports}" if ports else "TCP connect/bind")
    if abi >= 6:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        covers.append("signals and abstract Unix sockets scoped")
    if seccomp.supported():
        covers.append(seccomp.COVERS)
    size = _RULESET_SIZE[max(v for v in _RULESET_SIZE if v <= abi)]
    ruleset = _checked(
        "landlock_create_ruleset",
        _syscall(create_ruleset, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)),
    )
    report = SandboxReport(
        confined=True,
        mechanism="Landlock",
        abi=abi,
        writable=policy.writable,
        covers=tuple(covers),
        allowances=policy.allowances,
    )
    try:
        devices = [Path(p) for p in _DEVICES]
        for pattern in _DEVICE_PATTERNS:
            devices.extend(Path("/dev") / name for name in _matching("/dev", pattern))
        rules = [
            *((path, _READ) for path in policy.readable),
            *((path, _READ | FS_EXECUTE) for path in policy.executable),
            *((path, _DEVICE) for path in devices),
            *((path, _WRITE) for path in (*policy.writable, Path("/dev/shm"))),
        ]
        for path, rights in rules:
            if not _add_path_rule(add_rule, ruleset, path, rights & fs_rights):
                report.missing.append(path)
        for port in tcp_ports if abi >= 4 else ():
            net = _NetPortAttr(allowed_access=NET_BIND_TCP | NET_CONNECT_TCP, port=port)
            _checked(
                f"landlock_add_rule (TCP port {port})",
                _syscall(add_rule, ruleset, _RULE_NET_PORT, ctypes.byref(net), ctypes.c_uint32(0)),
            )
        _checked(
            "prctl(PR_SET_NO_NEW_PRIVS)",
            _syscall(
                _SYS_PRCTL[platform.machine()],
                _PR_SET_NO_NEW_PRIVS,
                ctypes.c_ulong(1),
                ctypes.c_ulong(0),
                ctypes.c_ulong(0),
                ctypes.c_ulong(0),
            ),
        )
        _checked("landlock_restrict_self", _syscall(restrict_self, ruleset, ctypes.c_uint32(0)))
        if seccomp.supported():
            seccomp.install()
    finally:
        os.close(ruleset)
    global _ENTERED
    _ENTERED = report
    return report


#: Set by a process that made a private network namespace, to its inode: processes it starts
#: (a DDP run's other ranks) are inside it already and must not make their own.
PRIVATE_NETWORK_VAR = "PYTEST_MODELTIERS_PRIVATE_NETWORK"
_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


def _network_namespace() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def inside_private_network() -> bool:
    """Whether this process is in the private network namespace a parent made for it."""
    return os.environ.get(PRIVATE_NETWORK_VAR) == str(_network_namespace())


def enter_private_network() -> bool:
    """Move this thread (and the processes it starts) into a new network namespace holding only
    a loopback device, and bring that up; False when the kernel refuses (no privilege and no
    unprivileged user namespaces). A process already in the namespace its parent made stays.
    """
    if inside_private_network():
        return True
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNET) != 0 and not _unshare_as_user():
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))
    os.environ[PRIVATE_NETWORK_VAR] = str(_network_namespace())
    return True


def _unshare_as_user() -> bool:
    """A network namespace inside a new user namespace, for an unprivileged process; the user and
    group map to themselves, so files keep their owners."""
    uid, gid = os.getuid(), os.getgid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
        return False
    try:
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    except OSError:
        return False
    return True


def describe_ports(ports: Iterable[int]) -> str:
    """``29500, 32768-60999``: sorted, runs collapsed (a DDP fallback allows thousands)."""
    runs: list[list[int]] = []
    for port in sorted(set(ports)):
        if runs and port == runs[-1][1] + 1:
            runs[-1][1] = port
        else:
            runs.append([port, port])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def _matching(folder: str, pattern: str) -> list[str]:
    try:
        return [name for name in os.listdir(folder) if fnmatch.fnmatch(name, pattern)]
    except OSError:
        return []


def _add_path_rule(add_rule: int, ruleset: int, path: Path, rights: int) -> bool:
    """Allow ``rights`` under ``path``; False when the path does not exist."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not os.path.isdir(path):
            rights &= _FILE_RIGHTS
        rule = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        _checked(
            f"landlock_add_rule ({path})",
            _syscall(add_rule, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), ctypes.c_uint32(0)),
        )
    finally:
        os.close(fd)
    return True


# -- secrets ---------------------------------------------------------------------------------------

#: Environment variable names that hold credentials (fnmatch patterns, upper case).
SECRET_PATTERNS = (
    "*_TOKEN",
    "*_KEY",
    "*_SECRET",
    "*_SECRET_*",
    "*_PASSWORD",
    "*_PASSWD",
    "*_CREDENTIALS",
    "*_API_KEY*",
    "*_ACCESS_KEY*",
    "AWS_*",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "SSH_AUTH_SOCK",
    "GPG_AGENT_INFO",
    "*TOKEN",
    "PASSWORD",
)


def scrub_secrets(environ: MutableMapping[str, str]) -> list[str]:
    """Remove variables that look like credentials from ``environ``; their names, sorted.

    With ``os.environ`` the C environment loses them too, so processes started afterwards do not
    inherit them. Values are never returned or logged.
    """
    names = sorted(
        name
        for name in list(environ)
        if any(fnmatch.fnmatchcase(name.upper(), pattern) for pattern in SECRET_PATTERNS)
    )
    for name in names:
        del environ[name]
    return names


def confined() -> SandboxReport | None:
    """What ``confine`` enforced on this process, or None when it was not confined."""
    return _ENTERED


def blocked_message(exc: BaseException, *, sandboxed: bool | None = None) -> str | None:
    """``"...: outside the sandbox; see --modeltiers-sandbox"`` for a denial by the sandbox.

    None unless ``exc`` is a ``PermissionError`` raised in a confined process (``sandboxed``
    overrides that): outside the sandbox, a permission error is the file system's own.
    """
    if sandboxed is None:
        sandboxed = _ENTERED is not None
    if not sandboxed or not isinstance(exc, PermissionError):
        return None
    if exc.filename is not None:
        what = f"the model tried to use {exc.filename}"
    else:
        what = f"the model was refused a network connection or another operation ({exc})"
    return f"{what}: outside the sandbox; see --modeltiers-sandbox"
