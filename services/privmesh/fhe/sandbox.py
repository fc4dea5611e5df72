"""Confinement of an FHE worker process, applied once it has imported everything it runs: a parser of untrusted
bytes taken over by its input must find no secret to read, no program to run and no socket to open.

- no core dumps (RLIMIT_CORE 0, not dumpable: no /proc/<pid>/mem for other processes of the user either);
- a scrubbed environment (the server's PRIVMESH_* variables can hold passwords);
- every inherited descriptor closed but the socket to the server and stdout/stderr;
- Landlock: the file system is read-only and limited to the session keys' directory and the Python
  installation (code, no secrets): the service's TLS key, audit key and databases cannot be opened;
- seccomp: execve/execveat, new sockets, opening a file for writing, io_uring (which bypasses seccomp), ptrace,
  namespaces, mounts, keyrings, BPF and module loading fail with EPERM; everything else is allowed.

Each step the kernel lacks is skipped with a logged warning; what was applied is returned.

Written by hand with ctypes because neither interface has a maintained Python binding on PyPI (libseccomp's own
bindings are not published there; pyseccomp, a ctypes wrapper of libseccomp, has been unmaintained since 2021);
both are a few structures and system calls.

Still missing: the filter is a deny-list, not an allow-list of the calls OpenFHE needs; and the worker keeps the
server's uid (the key files it reads are the server's own, mode 0600), so where Landlock is missing, only the
seccomp filter stands between it and the service's files.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
import resource
import struct
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from pathlib import Path

log = logging.getLogger("privmesh.fhe.sandbox")

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 4, 38, 22
SECCOMP_MODE_FILTER = 2

# --- seccomp -----------------------------------------------------------------------------------------------

# (audit arch, {name: number}) per machine; numbers from the kernel's syscall tables.
_ARCHES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (0xC000003E, {
        "execve": 59, "execveat": 322, "socket": 41, "socketpair": 53, "connect": 42, "accept": 43, "accept4": 288,
        "bind": 49, "listen": 50, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "mount": 165,
        "umount2": 166, "pivot_root": 155, "chroot": 161, "setns": 308, "unshare": 272, "keyctl": 250,
        "add_key": 248, "request_key": 249, "bpf": 321, "perf_event_open": 298, "init_module": 175,
        "finit_module": 313, "kexec_load": 246, "open_by_handle_at": 304, "userfaultfd": 323,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "openat2": 437, "creat": 85,
        "open": 2, "openat": 257}),
    "aarch64": (0xC00000B7, {
        "execve": 221, "execveat": 281, "socket": 198, "socketpair": 199, "connect": 203, "accept": 202,
        "accept4": 242, "bind": 200, "listen": 201, "ptrace": 117, "process_vm_readv": 270,
        "process_vm_writev": 271, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "setns": 268,
        "unshare": 97, "keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280, "perf_event_open": 241,
        "init_module": 105, "finit_module": 273, "kexec_load": 104, "open_by_handle_at": 265, "userfaultfd": 282,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "openat2": 437, "openat": 56}),
}
_OPEN_FLAG_ARG = {"open": 1, "openat": 2}  # the flags argument of the calls allowed when they only read
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW, _RET_KILL = 0x7FFF0000, 0x80000000
_RET_EPERM = 0x00050000 | errno.EPERM


def _filter(machine: str) -> bytes:
    """The classic-BPF program: sock_filter entries {u16 code, u8 jt, u8 jf, u32 k}."""
    arch, numbers = _ARCHES[machine]
    program: list[tuple[int, int, int, int]] = [(_LD_ABS, 0, 0, 4)]  # seccomp_data.arch
    program.append((_JEQ, 1, 0, arch))
    program.append((_RET, 0, 0, _RET_KILL))  # another ABI (e.g. 32-bit calls): their numbers differ
    program.append((_LD_ABS, 0, 0, 0))  # seccomp_data.nr
    if machine == "x86_64":
        program += [(_JGE, 0, 1, 0x40000000), (_RET, 0, 0, _RET_EPERM)]  # the x32 ABI
    for name, number in numbers.items():
        if name in _OPEN_FLAG_ARG:
            # nr matches: load the flags (low 32 bits of the argument), refuse write flags, else allow.
            program += [(_JEQ, 0, 3, number), (_LD_ABS, 0, 0, 16 + 8 * _OPEN_FLAG_ARG[name]),
                        (_JSET, 0, 1, _WRITE_FLAGS), (_RET, 0, 0, _RET_EPERM), (_LD_ABS, 0, 0, 0)]
            # after the flags check the allowed path falls through with nr reloaded; an allowed open returns
            # below as it matches no other number.
        else:
            program += [(_JEQ, 0, 1, number), (_RET, 0, 0, _RET_EPERM)]
    program.append((_RET, 0, 0, _RET_ALLOW))
    return b"".join(struct.pack("=HBBI", *entry) for entry in program)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _install_seccomp() -> bool:
    machine = platform.machine()
    if machine not in _ARCHES:
        log.warning("no seccomp filter for machine %s: the FHE worker runs without one", machine)
        return False
    code = _filter(machine)
    buffer = ctypes.create_string_buffer(code, len(code))
    program = _SockFprog(len(code) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0) != 0:
        log.warning("the kernel refused the seccomp filter (%s): the FHE worker runs without one",
                    os.strerror(ctypes.get_errno()))
        return False
    return True


# --- Landlock ----------------------------------------------------------------------------------------------

_SYS_LANDLOCK = (444, 445, 446)  # create_ruleset, add_rule, restrict_self (the same on x86_64 and aarch64)
_READ_FILE, _READ_DIR = 1 << 2, 1 << 3
_RULE_PATH_BENEATH = 1


def _landlock_abi() -> int:
    version = _libc.syscall(_SYS_LANDLOCK[0], None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    return int(version) if version > 0 else 0


def _handled_access(abi: int) -> int:
    """Every file-system right the ABI knows (v1: 13, v2 REFER, v3 TRUNCATE, v5 IOCTL_DEV)."""
    rights = (1 << 13) - 1
    for version, bit in ((2, 13), (3, 14), (5, 15)):
        if abi >= version:
            rights |= 1 << bit
    return rights


def _install_landlock(readable: Iterable[Path]) -> bool:
    abi = _landlock_abi()
    if abi == 0:
        log.warning("Landlock is not available: the FHE worker keeps the file system of the server")
        return False
    attr = struct.pack("=Q", _handled_access(abi))  # struct landlock_ruleset_attr, handled_access_fs only
    ruleset = _libc.syscall(_SYS_LANDLOCK[0], attr, len(attr), 0)
    if ruleset < 0:
        log.warning("Landlock refused a ruleset (%s)", os.strerror(ctypes.get_errno()))
        return False
    try:
        for path in readable:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                log.warning("%s cannot be opened: the FHE worker may not read it", path)
                continue
            try:
                rule = struct.pack("=Qi", _READ_FILE | _READ_DIR, fd)  # landlock_path_beneath_attr (packed)
                if _libc.syscall(_SYS_LANDLOCK[1], ruleset, _RULE_PATH_BENEATH, rule, 0) != 0:
                    log.warning("Landlock refused a rule for %s", path)
            finally:
                os.close(fd)
        if _libc.syscall(_SYS_LANDLOCK[2], ruleset, 0) != 0:
            log.warning("Landlock could not restrict the worker (%s)", os.strerror(ctypes.get_errno()))
            return False
    finally:
        os.close(ruleset)
    return True


# --- the whole confinement ---------------------------------------------------------------------------------

def _python_paths() -> list[Path]:
    """Where the interpreter and the installed packages live: code only, readable for late imports."""
    paths = {Path(p) for p in sysconfig.get_paths().values()} | {Path(sys.prefix), Path(sys.base_prefix)}
    paths |= {Path(p) for p in sys.path if p and Path(p).is_dir()}
    return sorted(p for p in paths - {Path.cwd()} if p.is_dir())  # the working directory may be the service's state


def _close_descriptors(keep: Sequence[int]) -> None:
    kept = sorted({*keep, 1, 2})
    start = 0
    for fd in [*kept, os.sysconf("SC_OPEN_MAX")]:
        if start < fd:
            os.closerange(start, fd)
        start = fd + 1


def confine(keep_fds: Sequence[int], readable_dir: Path | None) -> dict[str, bool]:
    """Confines the calling process for good (see the module docstring); returns which layers are in place."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    os.environ.clear()
    _close_descriptors(keep_fds)
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        log.warning("no_new_privs could not be set: the FHE worker runs without Landlock and seccomp")
        return {"landlock": False, "seccomp": False}
    readable = [*([readable_dir] if readable_dir else []), *_python_paths()]
    return {"landlock": _install_landlock(readable), "seccomp": _install_seccomp()}
