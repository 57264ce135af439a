//! The agent's priority: the lowest CPU priority (nice 19) and the idle I/O class, so compiling
//! ahead never takes time or disk bandwidth a workload wants. The compile helper it starts
//! inherits both.

/// `ioprio_set(2)`'s "this process", and its idle class.
const IOPRIO_WHO_PROCESS: libc::c_int = 1;
const IOPRIO_CLASS_IDLE: libc::c_int = 3;
const IOPRIO_CLASS_SHIFT: libc::c_int = 13;

/// Lowers this process's CPU and I/O priority; what the kernel refuses is logged.
pub fn lower() {
    if let Err(e) = rustix::process::setpriority_process(None, 19) {
        tracing::warn!(error = %e, "could not lower the CPU priority");
    }
    if let Err(e) = idle_io() {
        tracing::warn!(error = %e, "could not take the idle I/O class");
    }
}

#[allow(
    unsafe_code,
    reason = "ioprio_set(2) takes three integers and touches no memory"
)]
fn idle_io() -> std::io::Result<()> {
    // SAFETY: plain integers; no memory is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_thread_that_lowers_itself_is_niced_and_threads_it_starts_too() {
        // Linux keeps both priorities per thread, inherited by the threads and processes it
        // starts: the agent lowers its first thread before any other starts.
        let t = std::thread::spawn(|| {
            super::lower();
            let nice = rustix::process::getpriority_process(None).unwrap();
            let stat =
                std::thread::spawn(|| std::fs::read_to_string("/proc/thread-self/stat").unwrap())
                    .join()
                    .unwrap();
            (nice, stat)
        });
        let (nice, stat) = t.join().unwrap();
        assert_eq!(nice, 19);
        // Field 19 of stat is the nice value.
        let rest = stat.rsplit_once(')').unwrap().1;
        assert_eq!(rest.split_whitespace().nth(16), Some("19"));
    }
}
