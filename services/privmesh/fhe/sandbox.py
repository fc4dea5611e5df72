"""Confinement of an FHE worker process, applied once it has imported and opened everything it runs: a parser of
untrusted bytes taken over by its input must find no secret to read, no program to run and no socket to open.

In order (each step the kernel lacks is skipped with a logged warning; what was applied is returned):
- no core dumps (RLIMIT_CORE 0, not dumpable: no /proc/<pid>/mem for other processes of its user either);
- a scrubbed environment (the server's PRIVMESH_* variables can hold passwords);
- every inherited descriptor closed but the two sockets to the server and stdout/stderr;
- started as root: the worker becomes `uid`:`gid` (65534, nobody, by default) with no supplementary groups, so
  the service's files (TLS key, audit signing key, databases: 0600/0640 of the server) are not its own. It
  needs nothing from them: the session key files it reads come as descriptors the server opened (worker.py);
- Landlock: the file system is read-only and limited to the Python installation (code, no secrets); it binds
  the calling thread only (OpenFHE's import has started one more), the seccomp filter and the uid bind all;
- seccomp, an allow-list (ALLOWED) of the calls that OpenFHE and the torch evaluator make after start-up, found
  by tracing the worker under the evaluation, key-check and model-circuit tests (strace -f; see
  docs/security.md). Refused with EPERM, so that the code that tries them fails cleanly: any open of a file
  (everything it reads was opened before the filter or is passed as a descriptor), exec, every socket call
  but reading and writing the inherited pair, signals to other processes, new processes (clone without
  CLONE_THREAD; clone3, whose flags a filter cannot read, answers ENOSYS so that threads fall back to clone).
  Every other call kills the worker (SECCOMP_RET_KILL_PROCESS): the evaluation never makes one, so it is
  code the input took over; killing it stops the probing at the first try, the server reports the input as
  malformed and starts a fresh worker, and the kernel's audit log records the call. Calls of another ABI than
  the native one (x32, 32-bit compat) kill too (libseccomp's bad-arch action).

Architectures: x86_64 and aarch64 (Graviton); any other refuses to start a worker (fail closed), as does a
kernel that refuses the filter for another reason than lacking seccomp.

The filter is built by libseccomp through pyseccomp (a ctypes binding; libseccomp2 is in every Debian and Ubuntu
base image, and without it no worker starts); Landlock has no Python binding on PyPI, so its three system calls
are made here with ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import platform
import resource
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyseccomp as seccomp  # type: ignore[import-untyped]

log = logging.getLogger("privmesh.fhe.sandbox")

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38
SUPPORTED_MACHINES = ("x86_64", "aarch64")

# --- seccomp -----------------------------------------------------------------------------------------------

# What the worker calls after confinement (traced; names absent on an architecture, like open on aarch64, are
# skipped by libseccomp). No call here reaches a file by path, a new socket, another process or the kernel's
# configuration.
ALLOWED = (
    # memory
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "membarrier",
    # threads (OpenMP's and torch's pools) and time
    "futex", "set_robust_list", "rseq", "sched_yield", "sched_getaffinity", "nanosleep", "clock_nanosleep",
    "clock_gettime", "gettimeofday", "getcpu", "gettid", "getpid", "getppid", "exit", "exit_group",
    "restart_syscall",
    # signals (to itself only: tgkill is checked below)
    "rt_sigprocmask", "rt_sigaction", "rt_sigreturn", "sigaltstack",
    # the descriptors it holds: the socket pair to the server and the key files the server passes on it
    "read", "readv", "pread64", "write", "writev", "lseek", "close", "fstat", "fcntl", "recvfrom", "recvmsg",
    "sendto", "getsockname", "getpeername",
    # identity and limits (read-only, or lowering its own)
    "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups", "getrlimit", "prlimit64",
    "getrusage", "times", "sysinfo", "uname", "getrandom",
)
REFUSED = (  # EPERM rather than a kill: libraries probe some of these, and what the attacker would want most
    "open", "openat", "openat2", "creat", "open_by_handle_at", "name_to_handle_at", "execve", "execveat",
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4", "kill", "tkill", "tgkill",
    "fork", "vfork", "ptrace", "process_vm_readv", "process_vm_writev", "io_uring_setup", "fchmod", "fchown",
    "ftruncate", "fallocate", "unlink", "unlinkat", "rename", "renameat", "renameat2", "mkdir", "mkdirat",
    "symlink", "symlinkat", "link", "linkat", "chmod", "fchmodat", "chown", "fchownat", "mknod", "mknodat",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups", "mount", "umount2",
    "unshare", "setns", "chroot", "pivot_root", "keyctl", "add_key", "request_key", "bpf", "perf_event_open",
    "userfaultfd", "seccomp", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self", "prctl",
    "statx", "stat", "lstat", "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getdents64",
)
_CLONE_THREAD, _AT_EMPTY_PATH = 0x10000, 0x1000


def _seccomp_filter(pid: int, extra: Sequence[str]) -> seccomp.SyscallFilter:
    flt = seccomp.SyscallFilter(seccomp.KILL_PROCESS)
    flt.set_attr(seccomp.Attr.CTL_TSYNC, 1)  # every thread of the process, not only the calling one
    for name in (*ALLOWED, *extra):
        flt.add_rule(seccomp.ALLOW, name)
    # fstat of a held descriptor (glibc's fstat is newfstatat(fd, "", AT_EMPTY_PATH)), never a path
    flt.add_rule(seccomp.ALLOW, "newfstatat", seccomp.Arg(3, seccomp.MASKED_EQ, _AT_EMPTY_PATH, _AT_EMPTY_PATH))
    flt.add_rule(seccomp.ERRNO(errno.EPERM), "newfstatat", seccomp.Arg(3, seccomp.MASKED_EQ, _AT_EMPTY_PATH, 0))
    eperm = seccomp.ERRNO(errno.EPERM)
    for name in REFUSED:
        if name in ("tgkill", "tkill"):
            continue
        flt.add_rule(eperm, name)
    # Signals: only to its own threads (Python's and glibc's raise/abort use tgkill on the process itself).
    flt.add_rule(seccomp.ALLOW, "tgkill", seccomp.Arg(0, seccomp.EQ, pid))
    flt.add_rule(eperm, "tgkill", seccomp.Arg(0, seccomp.NE, pid))
    flt.add_rule(eperm, "tkill")
    # New threads, never new processes; clone3 hides its flags in memory, so it is reported missing.
    flt.add_rule(seccomp.ALLOW, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_THREAD, _CLONE_THREAD))
    flt.add_rule(eperm, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_THREAD, 0))
    flt.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    return flt


def _install_seccomp(extra: Sequence[str]) -> bool:
    flt = _seccomp_filter(os.getpid(), extra)
    try:
        flt.load()
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOSYS):  # a kernel built without seccomp filters
            log.warning("the kernel has no seccomp filters (%s): the FHE worker runs without one", exc)
            return False
        raise
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


def _landlock_ruleset(readable: Iterable[Path]) -> int | None:
    """A ruleset that leaves `readable` readable (opened now, while the paths can still be reached), or None."""
    import struct

    abi = _landlock_abi()
    if abi == 0:
        log.warning("Landlock is not available: the FHE worker keeps the file system of the server")
        return None
    attr = struct.pack("=Q", _handled_access(abi))  # struct landlock_ruleset_attr, handled_access_fs only
    ruleset = int(_libc.syscall(_SYS_LANDLOCK[0], attr, len(attr), 0))
    if ruleset < 0:
        log.warning("Landlock refused a ruleset (%s)", os.strerror(ctypes.get_errno()))
        return None
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
    return ruleset


def _restrict(ruleset: int | None) -> bool:
    if ruleset is None:
        return False
    try:
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
    paths |= {Path(p) for p in sys.path if p}
    found = []
    for path in sorted(paths - {Path.cwd()}):  # the working directory may be the service's state
        with contextlib.suppress(OSError):
            if path.is_dir():
                found.append(path)
    return found


def _close_descriptors(keep: Sequence[int]) -> None:
    kept = sorted({*keep, 1, 2})
    start = 0
    for fd in [*kept, os.sysconf("SC_OPEN_MAX")]:
        if start < fd:
            os.closerange(start, fd)
        start = fd + 1


def _drop_privileges(uid: int, gid: int) -> bool:
    """Started as root: becomes uid:gid with no supplementary groups and no capabilities, for good."""
    if os.geteuid() != 0:
        return False
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)  # from root to another uid: the capabilities go too
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        raise RuntimeError("the FHE worker could not drop its privileges")
    return True


def confine(keep_fds: Sequence[int], uid: int, gid: int, extra_calls: Sequence[str] = ()) -> dict[str, bool]:
    """Confines the calling process for good (see the module docstring); returns which layers are in place.
    `extra_calls` join the allow-list (a CUDA worker's driver needs ioctl on its device files). Raises, and the
    worker does not start, where confinement is possible but failed."""
    machine = platform.machine()
    if machine not in SUPPORTED_MACHINES:
        log.error("no seccomp allow-list for machine %s: the FHE worker does not start", machine)
        raise RuntimeError(f"unsupported machine {machine} for the FHE sandbox")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.environ.clear()
    ruleset = _landlock_ruleset(_python_paths())
    _close_descriptors([*keep_fds, *([ruleset] if ruleset is not None else [])])
    dropped = _drop_privileges(uid, gid)
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # after the uid change, which resets it
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise RuntimeError("no_new_privs could not be set on the FHE worker")
    threads = len(os.listdir("/proc/self/task"))
    if threads > 1:  # Landlock binds the calling thread only (seccomp and the uid apply to every thread)
        log.warning("Landlock covers the FHE worker's main thread, not the %d others OpenFHE started", threads - 1)
    return {"uid": dropped, "landlock": _restrict(ruleset), "seccomp": _install_seccomp(extra_calls)}
