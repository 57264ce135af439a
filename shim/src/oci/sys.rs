//! The fork the runtime face makes: `create` and `exec` fork the process that becomes the
//! container's (or the added one), which then goes on as ordinary Rust code.

/// Forks; 0 in the child. The caller is single-threaded (a runtime command starts no thread
/// before it forks), so the child may run anything.
#[allow(
    unsafe_code,
    reason = "fork(2) from a single-threaded process: the child may go on running Rust code"
)]
pub fn fork() -> anyhow::Result<i32> {
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse::<u32>().ok())
        })
        .unwrap_or(0);
    anyhow::ensure!(threads == 1, "forking with {threads} threads running");
    // SAFETY: the process is single-threaded (checked above).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(pid)
}
