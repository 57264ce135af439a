//! Defence in depth: a seccomp filter on every thread that runs guests (the runtime's executor
//! workers and its blocking pool), denying with `EPERM` what a wasm host never needs. Should a
//! guest ever reach native code on such a thread, it still cannot exec a program, trace another
//! process, mount, load kernel code or change namespaces.
//!
//! Installed per thread when the thread starts; a thread started by a filtered one already has
//! it. Threads outside the runtime's executor (the shim's ttrpc server, which runs runc; the CLI's
//! main thread, which builds mount trees) are not filtered.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The system calls denied on guest threads, by name (documented in the README).
pub const DENIED: &[(&str, libc::c_long)] = &[
    ("execve", libc::SYS_execve),
    ("execveat", libc::SYS_execveat),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("mount", libc::SYS_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsmount", libc::SYS_fsmount),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("fspick", libc::SYS_fspick),
    ("fsconfig", libc::SYS_fsconfig),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
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

/// The compiled filters: the denied calls (and namespace-making `clone`) answer `EPERM`;
/// `clone3`, whose flags live in memory a filter cannot read, answers `ENOSYS`, so libc falls back
/// to `clone`, which the first filter checks.
pub(crate) fn programs() -> Result<Vec<BpfProgram>, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|(_, nr)| (*nr, Vec::new())).collect();
    #[cfg(target_arch = "x86_64")]
    {
        for nr in DENIED
            .iter()
            .map(|(_, nr)| nr | X32_BIT)
            .chain(X32_OWN.iter().map(|n| n | X32_BIT))
        {
            rules.insert(nr, Vec::new());
        }
    }
    let clone_rules = CLONE_NS_FLAGS
        .iter()
        .map(|&flag| {
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .and_then(|c| SeccompRule::new(vec![c]))
            .map_err(|e| format!("building the clone rule: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    let clone3 = [(libc::SYS_clone3, Vec::new())].into_iter().collect();
    Ok(vec![
        compile(rules, libc::EPERM)?,
        compile(clone3, libc::ENOSYS)?,
    ])
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
