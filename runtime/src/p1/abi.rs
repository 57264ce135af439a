//! Preview 1's ABI as the shadowed calls meet it: the module name, errno values, bounds-checked
//! guest memory, and the glue that hands a call on to wasmtime-wasi. A leaf of `p1`.

use wasmtime::{Caller, Extern};

use crate::host::P1Host;

pub(crate) const MODULE: &str = "wasi_snapshot_preview1";

// errno values of WASI preview 1.
pub(crate) const SUCCESS: i32 = 0;
pub(crate) const EACCES: i32 = 2;
pub(crate) const EAGAIN: i32 = 6;
pub(crate) const ECONNRESET: i32 = 15;
pub(crate) const EEXIST: i32 = 20;
pub(crate) const EFAULT: i32 = 21;
pub(crate) const EINTR: i32 = 27;
pub(crate) const EINVAL: i32 = 28;
pub(crate) const EMFILE: i32 = 33;
pub(crate) const ENOSPC: i32 = 51;
pub(crate) const EIO: i32 = 29;
pub(crate) const ENOTCONN: i32 = 53;
pub(crate) const ENOTDIR: i32 = 54;
pub(crate) const ENOTSUP: i32 = 58;
pub(crate) const EPIPE: i32 = 64;

// `path_open`'s `oflags` bits that more than one call looks at.
pub(crate) const OFLAGS_CREAT: i32 = 1;
pub(crate) const OFLAGS_EXCL: i32 = 4;

/// Most iovecs one call takes (Linux's `IOV_MAX`); more is `EINVAL`.
pub(crate) const IOV_MAX: u32 = 1024;
/// `at + k` in guest address space; past 4 GiB is `EFAULT`.
pub(crate) fn off(at: u32, k: u32) -> Result<u32, i32> {
    at.checked_add(k).ok_or(EFAULT)
}

/// Guest memory access with bounds checks; out-of-bounds is `EFAULT`.
pub(crate) struct Mem<'a>(pub(crate) &'a mut [u8]);

impl Mem<'_> {
    pub(crate) fn slice(&mut self, ptr: u32, len: u32) -> Result<&mut [u8], i32> {
        let start = ptr as usize;
        let end = start.checked_add(len as usize).ok_or(EFAULT)?;
        self.0.get_mut(start..end).ok_or(EFAULT)
    }
    pub(crate) fn u32(&mut self, ptr: u32) -> Result<u32, i32> {
        Ok(u32::from_le_bytes(
            self.slice(ptr, 4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(crate) fn u64(&mut self, ptr: u32) -> Result<u64, i32> {
        Ok(u64::from_le_bytes(
            self.slice(ptr, 8)?.try_into().expect("8 bytes"),
        ))
    }
    pub(crate) fn put(&mut self, ptr: u32, bytes: &[u8]) -> Result<(), i32> {
        self.slice(ptr, bytes.len() as u32)?.copy_from_slice(bytes);
        Ok(())
    }
    /// The (ptr, len) pairs of an iovec array of at most [`IOV_MAX`] entries.
    pub(crate) fn iovs(&mut self, iovs: u32, n: u32) -> Result<Vec<(u32, u32)>, i32> {
        if n > IOV_MAX {
            return Err(EINVAL);
        }
        (0..n)
            .map(|i| {
                let at = iovs
                    .checked_add(i.checked_mul(8).ok_or(EFAULT)?)
                    .ok_or(EFAULT)?;
                Ok((self.u32(at)?, self.u32(off(at, 4)?)?))
            })
            .collect()
    }
}

pub(crate) fn memory(caller: &mut Caller<'_, P1Host>) -> wasmtime::Result<wasmtime::Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => wasmtime::bail!("missing required memory export"),
    }
}

/// Delegates a call to wasmtime-wasi's implementation, as its own linker glue would; with
/// `in BUF`, a buffer of the host's stands in for the guest's memory (the call's pointers are
/// offsets in it).
macro_rules! delegate {
    ($caller:ident, $func:ident, async ($($arg:expr),*) in $buf:expr) => {{
        let fuel = wasmtime::AsContextMut::as_context_mut(&mut $caller).hostcall_fuel();
        let ctx = &mut $caller.data_mut().wasi;
        wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1::set_hostcall_fuel(ctx, fuel);
        let mut gm = ::wiggle::GuestMemory::Unshared($buf);
        wasmtime_wasi::p1::wasi_snapshot_preview1::$func(ctx, &mut gm, $($arg),*).await
    }};
    ($caller:ident, $func:ident, async ($($arg:expr),*)) => {{
        let fuel = wasmtime::AsContextMut::as_context_mut(&mut $caller).hostcall_fuel();
        let mem = $crate::p1::abi::memory(&mut $caller)?;
        let (data, host) = mem.data_and_store_mut(&mut $caller);
        let ctx = &mut host.wasi;
        wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1::set_hostcall_fuel(ctx, fuel);
        let mut gm = ::wiggle::GuestMemory::Unshared(data);
        wasmtime_wasi::p1::wasi_snapshot_preview1::$func(ctx, &mut gm, $($arg),*).await
    }};
    ($caller:ident, $func:ident, ($($arg:expr),*)) => {{
        let fuel = wasmtime::AsContextMut::as_context_mut(&mut $caller).hostcall_fuel();
        let mem = $crate::p1::abi::memory(&mut $caller)?;
        let (data, host) = mem.data_and_store_mut(&mut $caller);
        let ctx = &mut host.wasi;
        wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1::set_hostcall_fuel(ctx, fuel);
        let mut gm = ::wiggle::GuestMemory::Unshared(data);
        wasmtime_wasi::p1::wasi_snapshot_preview1::$func(ctx, &mut gm, $($arg),*)
    }};
}
pub(crate) use delegate;
