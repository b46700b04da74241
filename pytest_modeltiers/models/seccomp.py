"""A seccomp filter for the sandbox: the system calls Landlock does not govern.

PYTEST_DONT_REWRITE

Landlock confines files, TCP and signals; this filter refuses, with ``EPERM``, what a model
never needs and an attacker would use next: UDP, raw and packet sockets, new Unix sockets
(Landlock does not judge ``connect`` to a socket file: ``/var/run/docker.sock`` would be one
call away; ``socketpair`` and inherited ones still work), ``ptrace`` and
``process_vm_readv``/``writev`` (reading or writing another process), ``bpf``, mounts and
``pivot_root``, the kernel keyring, new namespaces (``unshare``, ``setns``, ``clone`` with a
namespace flag) and ``pidfd_getfd``. Everything else is allowed: the filter is a short denylist
on top of Landlock's allowlist, so ordinary work (threads, ``fork``/``exec`` of Python, TCP
sockets whose connect Landlock then judges, pipes) is untouched. ``clone3`` answers
``ENOSYS``: its flags sit in memory a filter cannot read, and the C library then falls back to
``clone``, whose flags it can. System calls of another ABI (32-bit calls on x86_64) are refused.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

# BPF opcodes (linux/filter.h) and seccomp constants (linux/seccomp.h, linux/audit.h).
_LD_W_ABS, _JEQ, _JGE, _JSET, _AND, _RET = 0x20, 0x15, 0x35, 0x45, 0x54, 0x06
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_NR, _ARCH, _ARG0, _ARG1 = 0, 4, 16, 24  # offsets in struct seccomp_data (little-endian low half)
_X32_BIT = 0x40000000
_AF_UNIX, _AF_INET, _AF_INET6, _AF_PACKET = 1, 2, 10, 17
_SOCK_DGRAM, _SOCK_RAW = 2, 3
_NEW_NAMESPACES = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)

#: Per machine: the audit architecture, then the numbers of socket, clone and clone3, then the
#: system calls refused outright.
_TABLES: dict[str, tuple[int, int, int, int, dict[str, int]]] = {
    "x86_64": (
        0xC000003E,
        41,
        56,
        435,
        {
            "ptrace": 101,
            "process_vm_readv": 310,
            "process_vm_writev": 311,
            "bpf": 321,
            "mount": 165,
            "umount2": 166,
            "pivot_root": 155,
            "keyctl": 250,
            "add_key": 248,
            "request_key": 249,
            "unshare": 272,
            "setns": 308,
            "pidfd_getfd": 438,
            "open_tree": 428,
            "move_mount": 429,
            "fsopen": 430,
            "fsmount": 432,
            "mount_setattr": 442,
        },
    ),
    "aarch64": (
        0xC00000B7,
        198,
        220,
        435,
        {
            "ptrace": 117,
            "process_vm_readv": 270,
            "process_vm_writev": 271,
            "bpf": 280,
            "mount": 40,
            "umount2": 39,
            "pivot_root": 41,
            "keyctl": 219,
            "add_key": 217,
            "request_key": 218,
            "unshare": 97,
            "setns": 268,
            "pidfd_getfd": 438,
            "open_tree": 428,
            "move_mount": 429,
            "fsopen": 430,
            "fsmount": 432,
            "mount_setattr": 442,
        },
    ),
}
_TABLES["arm64"] = _TABLES["aarch64"]

#: What the header says the filter covers.
COVERS = (
    "seccomp: UDP, raw, packet and new Unix sockets, ptrace and process_vm_*, bpf, mounts, "
    "keyrings, new namespaces"
)


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def _deny(code: int = errno.EPERM) -> bytes:
    return _op(_RET, _ERRNO | code)


def program(machine: str) -> bytes:
    """The filter for ``machine`` as raw ``struct sock_filter`` instructions."""
    arch, socket_nr, clone_nr, clone3_nr, refused = _TABLES[machine]
    ops = [
        _op(_LD_W_ABS, _ARCH),
        _op(_JEQ, arch, jt=1),
        _deny(),  # another ABI (32-bit calls from a 64-bit process)
        _op(_LD_W_ABS, _NR),
    ]
    if machine == "x86_64":
        ops += [_op(_JGE, _X32_BIT, jf=1), _deny()]
    ops += [_op(_JEQ, clone3_nr, jf=1), _deny(errno.ENOSYS)]
    for number in refused.values():
        ops += [_op(_JEQ, number, jf=1), _deny()]
    socket_block = [
        _op(_LD_W_ABS, _ARG0),
        _op(_JEQ, _AF_PACKET, jf=1),
        _deny(),
        _op(_JEQ, _AF_UNIX, jf=1),
        _deny(),
        _op(_JEQ, _AF_INET, jt=2),
        _op(_JEQ, _AF_INET6, jt=1),
        _op(_RET, _ALLOW),
        _op(_LD_W_ABS, _ARG1),
        _op(_AND, 0xF),
        _op(_JEQ, _SOCK_DGRAM, jt=2),
        _op(_JEQ, _SOCK_RAW, jt=1),
        _op(_RET, _ALLOW),
        _deny(),
    ]
    ops += [_op(_JEQ, socket_nr, jf=len(socket_block)), *socket_block]
    clone_block = [_op(_LD_W_ABS, _ARG0), _op(_JSET, _NEW_NAMESPACES, jf=1), _deny()]
    ops += [_op(_JEQ, clone_nr, jf=len(clone_block)), *clone_block]
    ops.append(_op(_RET, _ALLOW))
    return b"".join(ops)


def supported() -> bool:
    return platform.system() == "Linux" and platform.machine() in _TABLES


def install() -> None:
    """Load the filter into this thread and its future children, irreversibly.

    Needs ``no_new_privs`` set first (the sandbox sets it for Landlock). Raises ``OSError`` when
    the kernel refuses the filter.
    """
    code = program(platform.machine())
    buffer = ctypes.create_string_buffer(code, len(code))
    prog = _SockFprog(len(code) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.restype = ctypes.c_int
    result = libc.prctl(
        _PR_SET_SECCOMP,
        ctypes.c_ulong(_SECCOMP_MODE_FILTER),
        ctypes.byref(prog),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )
    if result != 0:
        code_ = ctypes.get_errno()
        raise OSError(code_, f"prctl(PR_SET_SECCOMP) failed: {errno.errorcode.get(code_, code_)}")
