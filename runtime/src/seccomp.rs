//! Defence in depth: seccomp filters answering `EPERM` to what a wasm host never needs.
//!
//! - [`lock_process`] filters every thread of the process, once its set-up is done, against
//!   [`EVERY_THREAD`]: executing a program, tracing, kernel code, keys, clocks and names, and
//!   namespace changes other than a new network namespace. Should a guest ever reach native code,
//!   on whatever thread, it cannot exec a program: the programs wasmbox itself still starts go
//!   through [`crate::spawner`], forked before the lock.
//! - Every thread that runs guests (the runtime's executor workers and its blocking pool) also
//!   carries the guest filter: [`EVERY_THREAD`], [`GUEST_THREADS`] (mounts and `unshare`), and
//!   `socket` when no guest of the process is granted network.
//!
//! A thread started by a filtered one already has its filters.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The system calls denied to every thread once the process is locked, and to guest threads
/// always, by name (documented in docs/security.md).
pub const EVERY_THREAD: &[(&str, libc::c_long)] = &[
    ("execve", libc::SYS_execve),
    ("execveat", libc::SYS_execveat),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("setns", libc::SYS_setns),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("syslog", libc::SYS_syslog),
    ("acct", libc::SYS_acct),
    ("quotactl", libc::SYS_quotactl),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
    ("fanotify_init", libc::SYS_fanotify_init),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("sethostname", libc::SYS_sethostname),
    ("setdomainname", libc::SYS_setdomainname),
];

/// Denied on guest threads on top of [`EVERY_THREAD`]: the process itself still builds mount
/// trees and makes network namespaces after set-up, guests never do. (`umount2` stays allowed: a
/// guest's mount tree is unmounted on its thread when it ends.)
pub const GUEST_THREADS: &[(&str, libc::c_long)] = &[
    ("mount", libc::SYS_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsmount", libc::SYS_fsmount),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("fspick", libc::SYS_fspick),
    ("fsconfig", libc::SYS_fsconfig),
    ("unshare", libc::SYS_unshare),
];

/// `clone` flags that make new namespaces: `clone` with any of them is denied like `unshare`.
const CLONE_NS_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// The x32 ABI's numbers for the calls it numbers apart (x86_64 only); the others are the x86_64
/// number with the x32 bit set.
#[cfg(target_arch = "x86_64")]
const X32_OWN: &[i64] = &[520, 545, 521, 539, 540];
#[cfg(target_arch = "x86_64")]
const X32_BIT: i64 = 0x4000_0000;

fn arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("seccomp on {}: {e}", std::env::consts::ARCH))
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> Result<BpfProgram, String> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch()?,
    )
    .map_err(|e| format!("building the seccomp filter: {e}"))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| format!("compiling the seccomp filter: {e}"))
}

/// Which threads a filter is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Threads {
    /// Every thread of the locked process.
    Every,
    /// Threads that run guests; `sockets` is false when no guest of the process is granted
    /// network.
    Guest { sockets: bool },
}

/// Rules that deny a call when its first argument has any of `flags` set.
fn any_flag(flags: impl Iterator<Item = u64>) -> Result<Vec<SeccompRule>, String> {
    flags
        .map(|flag| {
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .and_then(|c| SeccompRule::new(vec![c]))
            .map_err(|e| format!("building a flag rule: {e}"))
        })
        .collect()
}

/// The compiled filters for `threads`: the denied calls (and namespace-making `clone`) answer
/// `EPERM`; `clone3`, whose flags live in memory a filter cannot read, answers `ENOSYS`, so libc
/// falls back to `clone`, which the first filter checks.
pub(crate) fn programs(threads: Threads) -> Result<Vec<BpfProgram>, String> {
    let mut denied: Vec<libc::c_long> = EVERY_THREAD.iter().map(|(_, nr)| *nr).collect();
    if let Threads::Guest { sockets } = threads {
        denied.extend(GUEST_THREADS.iter().map(|(_, nr)| *nr));
        if !sockets {
            denied.push(libc::SYS_socket);
        }
    }
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        denied.iter().map(|nr| (*nr, Vec::new())).collect();
    #[cfg(target_arch = "x86_64")]
    {
        for nr in denied
            .iter()
            .map(|nr| nr | X32_BIT)
            .chain(X32_OWN.iter().map(|n| n | X32_BIT))
        {
            rules.insert(nr, Vec::new());
        }
    }
    rules.insert(libc::SYS_clone, any_flag(CLONE_NS_FLAGS.iter().copied())?);
    if threads == Threads::Every {
        // The shim makes a network namespace for a server that asks for one of its own.
        let but_net = CLONE_NS_FLAGS
            .iter()
            .copied()
            .filter(|&f| f != libc::CLONE_NEWNET as u64);
        rules.insert(libc::SYS_unshare, any_flag(but_net)?);
    }
    let clone3 = [(libc::SYS_clone3, Vec::new())].into_iter().collect();
    Ok(vec![
        compile(rules, libc::EPERM)?,
        compile(clone3, libc::ENOSYS)?,
    ])
}

/// Forks the [`crate::spawner`], through which the process starts programs from now on (only the
/// `allowed` ones), then
/// filters every thread of the process against [`EVERY_THREAD`] for the rest of its life. Call it
/// while the process is still single-threaded, once it has entered its namespaces and before the
/// runtime starts its guest threads (whose own filters then stack on this one). Idempotent.
pub fn lock_process(allowed: Vec<crate::spawner::Allowed>) -> Result<(), String> {
    static LOCKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    LOCKED
        .get_or_init(|| {
            crate::spawner::start(allowed).map_err(|e| e.to_string())?;
            for prog in programs(Threads::Every)? {
                seccompiler::apply_filter_all_threads(&prog)
                    .map_err(|e| format!("locking the process with a seccomp filter: {e}"))?;
            }
            Ok(())
        })
        .clone()
}

/// How many seccomp filters the calling thread runs under (`Seccomp_filters` in its status).
pub(crate) fn filter_count() -> usize {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Seccomp_filters:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Installs `progs` on the calling thread unless it already has them: a thread started by a
/// filtered thread inherits its filters, so a thread with more than `baseline` (what the process
/// had before wasmbox filtered anything, a container runtime's own profile for instance) is
/// already filtered, and filters never pile up.
pub(crate) fn install(progs: &[BpfProgram], baseline: usize) {
    if filter_count() > baseline {
        return;
    }
    for prog in progs {
        if let Err(e) = seccompiler::apply_filter(prog) {
            // The thread must not run guests unfiltered: end the process loudly.
            eprintln!("wasmbox: installing the seccomp filter on a guest thread: {e}");
            std::process::abort();
        }
    }
}
