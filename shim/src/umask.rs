//! The umask the files guests create get, whichever face runs them: a process started with a
//! umask of 0 must not make group- or world-writable files in a guest's grants.

/// The umask files a guest creates get when the spec names none.
pub const DEFAULT_UMASK: u32 = 0o022;

/// Sets the process's umask, which the files a guest creates in its grants get.
#[allow(unsafe_code, reason = "umask(2) cannot fail and touches no memory")]
pub fn set_umask(mask: u32) {
    // SAFETY: umask only swaps the process's file mode mask.
    unsafe {
        libc::umask(mask as libc::mode_t);
    }
}
