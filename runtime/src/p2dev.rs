//! WASI 0.2's descriptor calls on the devices of `/dev` ([`crate::devices`]). `open-at` (in
//! `p2fs`) opens a device's placeholder read-only ([`open_flags`]); the calls here answer for a
//! descriptor whose file is a placeholder as the device would (streams, `read`, `write`, its
//! type, flags and status, by descriptor and by path), and hand every other descriptor on to
//! wasmtime-wasi. A directory's listing ([`Listing`]) gives the devices in it as character
//! devices. A descriptor is known to be a device by its file's identity, so nothing here
//! has to follow descriptors around. WASI 0.3's descriptors get no device answers yet.

use bytes::Bytes;
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Descriptor, DescriptorFlags, DescriptorStat, DescriptorType, DirectoryEntry, ErrorCode,
    Filesize, HostDescriptor, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, FsError, InputStream, OutputStream, Pollable, StreamError,
    StreamResult,
};

use crate::devices::{Device, MAX_READ, WriteError};
use crate::host::P2Host;

use crate::p2fs::TYPES;

/// The `open-at` flags that open a device's placeholder: read-only, nothing created or
/// truncated. Asking for a directory is `not-directory`, and for a new file `exist`.
pub(crate) fn open_flags(
    open: OpenFlags,
    _flags: DescriptorFlags,
) -> Result<(OpenFlags, DescriptorFlags), ErrorCode> {
    if open.contains(OpenFlags::DIRECTORY) {
        return Err(ErrorCode::NotDirectory);
    }
    if open.contains(OpenFlags::CREATE | OpenFlags::EXCLUSIVE) {
        return Err(ErrorCode::Exist);
    }
    Ok((OpenFlags::empty(), DescriptorFlags::READ))
}

/// The device the guest's descriptor `fd` is, if it is one.
fn device(host: &P2Host, fd: &Resource<Descriptor>) -> Option<Device> {
    match host.table.get(fd) {
        Ok(wasmtime_wasi::filesystem::Descriptor::File(f)) => crate::devices::of_file(&*f.file),
        _ => None,
    }
}

/// A device's input stream.
struct Input(Device);

#[wasmtime_wasi::async_trait]
impl InputStream for Input {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        match self.0 {
            Device::Null => Err(StreamError::Closed),
            d => Ok(Bytes::from(d.read_vec(size as u64))),
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Input {
    async fn ready(&mut self) {}
}

/// A device's output stream.
struct Output(Device);

/// `ENOSPC` as a stream's error, which `filesystem-error-code` reads as `insufficient-space`.
fn no_space() -> StreamError {
    StreamError::LastOperationFailed(wasmtime::Error::from(std::io::Error::from_raw_os_error(
        libc::ENOSPC,
    )))
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Output {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        match self.0.write(bytes.len()) {
            Ok(_) => Ok(()),
            Err(WriteError::NoSpace) => Err(no_space()),
        }
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_READ)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Output {
    async fn ready(&mut self) {}
}

/// A `directory-entry-stream`: wasmtime-wasi's entries of a directory, with the devices'
/// placeholders among them given as character devices.
pub(crate) struct Listing {
    entries: Box<dyn Iterator<Item = Result<DirectoryEntry, FsError>> + Send>,
    /// The directory listed, when the guest's descriptor is one.
    dir: Option<std::sync::Arc<std::fs::File>>,
}

impl Listing {
    /// The next entry, a device's placeholder given as a character device.
    fn next(&mut self) -> Option<Result<DirectoryEntry, FsError>> {
        let mut entry = self.entries.next()?;
        if let (Ok(e), Some(dir)) = (&mut entry, &self.dir)
            && e.type_ == DescriptorType::RegularFile
            && crate::devices::named(e.name.as_bytes())
            && crate::devices::beneath(&**dir, e.name.as_bytes(), false).is_some()
        {
            e.type_ = DescriptorType::CharacterDevice;
        }
        Some(entry)
    }
}

/// A device's status: a character device, empty, with the placeholder's times.
fn device_stat(mut stat: DescriptorStat) -> DescriptorStat {
    stat.type_ = DescriptorType::CharacterDevice;
    stat.size = 0;
    stat
}

/// wasmtime-wasi's answer as the call's result: its error code, or its trap.
fn answer<T>(r: Result<T, FsError>) -> wasmtime::Result<(Result<T, ErrorCode>,)> {
    match r {
        Ok(v) => Ok((Ok(v),)),
        Err(e) => Ok((Err(e.downcast()?),)),
    }
}

/// Shadows the descriptor calls in `linker`, which already holds wasmtime-wasi's 0.2.
pub(crate) fn add_to_linker(linker: &mut Linker<P2Host>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut i = linker.instance(TYPES)?;
    i.func_wrap(
        "[method]descriptor.read-via-stream",
        |mut store, (fd, offset): (Resource<Descriptor>, Filesize)| {
            let host: &mut P2Host = store.data_mut();
            match device(host, &fd) {
                Some(d) => {
                    let s: DynInputStream = Box::new(Input(d));
                    Ok((Ok(host.table.push(s)?),))
                }
                None => answer(HostDescriptor::read_via_stream(
                    &mut host.filesystem(),
                    fd,
                    offset,
                )),
            }
        },
    )?;
    i.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store, (fd, offset): (Resource<Descriptor>, Filesize)| {
            let host: &mut P2Host = store.data_mut();
            match device(host, &fd) {
                Some(d) => {
                    let s: DynOutputStream = Box::new(Output(d));
                    Ok((Ok(host.table.push(s)?),))
                }
                None => answer(HostDescriptor::write_via_stream(
                    &mut host.filesystem(),
                    fd,
                    offset,
                )),
            }
        },
    )?;
    i.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store, (fd,): (Resource<Descriptor>,)| {
            let host: &mut P2Host = store.data_mut();
            match device(host, &fd) {
                Some(d) => {
                    let s: DynOutputStream = Box::new(Output(d));
                    Ok((Ok(host.table.push(s)?),))
                }
                None => answer(HostDescriptor::append_via_stream(
                    &mut host.filesystem(),
                    fd,
                )),
            }
        },
    )?;
    i.func_wrap_async(
        "[method]descriptor.read",
        |mut store, (fd, len, offset): (Resource<Descriptor>, Filesize, Filesize)| {
            Box::new(async move {
                let host: &mut P2Host = store.data_mut();
                match device(host, &fd) {
                    Some(Device::Null) => Ok((Ok((Vec::new(), true)),)),
                    Some(d) => Ok((Ok((d.read_vec(len), false)),)),
                    None => {
                        answer(HostDescriptor::read(&mut host.filesystem(), fd, len, offset).await)
                    }
                }
            })
        },
    )?;
    i.func_wrap_async(
        "[method]descriptor.write",
        |mut store, (fd, buf, offset): (Resource<Descriptor>, Vec<u8>, Filesize)| {
            Box::new(async move {
                let host: &mut P2Host = store.data_mut();
                match device(host, &fd) {
                    Some(d) => Ok((match d.write(buf.len()) {
                        Ok(n) => Ok(n as Filesize),
                        Err(WriteError::NoSpace) => Err(ErrorCode::InsufficientSpace),
                    },)),
                    None => {
                        answer(HostDescriptor::write(&mut host.filesystem(), fd, buf, offset).await)
                    }
                }
            })
        },
    )?;
    i.func_wrap_async(
        "[method]descriptor.get-type",
        |mut store, (fd,): (Resource<Descriptor>,)| {
            Box::new(async move {
                let host: &mut P2Host = store.data_mut();
                if device(host, &fd).is_some() {
                    return Ok((Ok(DescriptorType::CharacterDevice),));
                }
                answer(HostDescriptor::get_type(&mut host.filesystem(), fd).await)
            })
        },
    )?;
    i.func_wrap_async(
        "[method]descriptor.get-flags",
        |mut store, (fd,): (Resource<Descriptor>,)| {
            Box::new(async move {
                let host: &mut P2Host = store.data_mut();
                if device(host, &fd).is_some() {
                    // Whatever the guest asked for, a device reads and writes.
                    return Ok((Ok(DescriptorFlags::READ | DescriptorFlags::WRITE),));
                }
                answer(HostDescriptor::get_flags(&mut host.filesystem(), fd).await)
            })
        },
    )?;
    // The stream of a directory's entries is a `Listing`: its type, the call that makes it and
    // the call that reads it replace wasmtime-wasi's, which are otherwise unchanged beneath.
    i.resource(
        "directory-entry-stream",
        ResourceType::host::<Listing>(),
        |mut store, rep| {
            let host: &mut P2Host = store.data_mut();
            host.table.delete(Resource::<Listing>::new_own(rep))?;
            Ok(())
        },
    )?;
    i.func_wrap_async(
        "[method]descriptor.read-directory",
        |mut store, (fd,): (Resource<Descriptor>,)| {
            Box::new(async move {
                let host: &mut P2Host = store.data_mut();
                let dir = match host.table.get(&fd) {
                    Ok(wasmtime_wasi::filesystem::Descriptor::Dir(d)) => Some(d.dir.clone()),
                    _ => None,
                };
                match HostDescriptor::read_directory(&mut host.filesystem(), fd).await {
                    Ok(stream) => {
                        let entries = host.table.delete(stream)?.into_iter();
                        Ok((Ok(host.table.push(Listing { entries, dir })?),))
                    }
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            })
        },
    )?;
    i.func_wrap(
        "[method]directory-entry-stream.read-directory-entry",
        |mut store, (stream,): (Resource<Listing>,)| {
            let host: &mut P2Host = store.data_mut();
            match host.table.get_mut(&stream)?.next() {
                None => Ok((Ok(None),)),
                Some(Ok(e)) => Ok((Ok(Some(e)),)),
                Some(Err(e)) => Ok((Err(e.downcast()?),)),
            }
        },
    )?;
    i.func_wrap_async(
        "[method]descriptor.stat",
        |mut store, (fd,): (Resource<Descriptor>,)| {
            Box::new(async move {
                let host: &mut P2Host = store.data_mut();
                let is_device = device(host, &fd).is_some();
                let r = HostDescriptor::stat(&mut host.filesystem(), fd).await;
                answer(r.map(|s| if is_device { device_stat(s) } else { s }))
            })
        },
    )?;
    i.func_wrap_async(
        "[method]descriptor.stat-at",
        |mut store, (fd, path_flags, path): (Resource<Descriptor>, PathFlags, String)| {
            Box::new(async move {
                let host: &mut P2Host = store.data_mut();
                let follow = path_flags.contains(PathFlags::SYMLINK_FOLLOW);
                // Through an absolute link, from the preopen holding where it leads.
                let moved = crate::p2links::moved(host, &fd, &path, follow);
                let (fd, path) = crate::p2links::target(&moved, fd, path);
                let is_device = match host.table.get(&fd) {
                    Ok(wasmtime_wasi::filesystem::Descriptor::Dir(d)) => {
                        crate::devices::beneath(&*d.dir, path.as_bytes(), follow).is_some()
                    }
                    _ => false,
                };
                let r = HostDescriptor::stat_at(&mut host.filesystem(), fd, path_flags, path).await;
                if let Some(m) = moved {
                    crate::p2links::done(host, m);
                }
                answer(r.map(|s| if is_device { device_stat(s) } else { s }))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_opens_read_only_and_never_as_a_directory_or_a_new_file() {
        let (open, flags) = open_flags(
            OpenFlags::CREATE | OpenFlags::TRUNCATE,
            DescriptorFlags::WRITE | DescriptorFlags::FILE_INTEGRITY_SYNC,
        )
        .unwrap();
        assert_eq!(open, OpenFlags::empty(), "nothing created or truncated");
        assert_eq!(flags, DescriptorFlags::READ);
        assert_eq!(
            open_flags(OpenFlags::DIRECTORY, DescriptorFlags::READ),
            Err(ErrorCode::NotDirectory)
        );
        assert_eq!(
            open_flags(
                OpenFlags::CREATE | OpenFlags::EXCLUSIVE,
                DescriptorFlags::READ
            ),
            Err(ErrorCode::Exist)
        );
    }

    #[test]
    fn streams_answer_as_the_devices() {
        let mut null = Input(Device::Null);
        assert!(matches!(null.read(10), Err(StreamError::Closed)));
        let mut zero = Input(Device::Zero);
        assert_eq!(&zero.read(4).unwrap()[..], &[0, 0, 0, 0]);
        assert_eq!(
            Input(Device::Urandom).read(1 << 30).unwrap().len(),
            MAX_READ
        );
        assert!(
            Output(Device::Null)
                .write(Bytes::from_static(b"gone"))
                .is_ok()
        );
        assert!(matches!(
            Output(Device::Full).write(Bytes::from_static(b"x")),
            Err(StreamError::LastOperationFailed(_))
        ));
    }

    #[test]
    fn a_listing_gives_the_placeholders_as_character_devices_and_nothing_else() {
        let scratch = tempfile::tempdir().unwrap();
        let dev =
            crate::devices::DevDir::create(scratch.path(), &["termination-log", "null2"]).unwrap();
        let entry = |name: &str, type_| DirectoryEntry {
            type_,
            name: name.into(),
        };
        let listed = vec![
            entry("null", DescriptorType::RegularFile),
            entry("termination-log", DescriptorType::RegularFile),
            entry("null2", DescriptorType::RegularFile),
            entry("urandom", DescriptorType::RegularFile),
        ];
        let list = |dir| Listing {
            entries: Box::new(listed.clone().into_iter().map(Ok)),
            dir,
        };
        let types = |mut l: Listing| {
            std::iter::from_fn(|| l.next())
                .map(|e| e.unwrap().type_)
                .collect::<Vec<_>>()
        };
        let dir = std::sync::Arc::new(std::fs::File::open(dev.path()).unwrap());
        use DescriptorType::{CharacterDevice as C, RegularFile as F};
        assert_eq!(types(list(Some(dir))), [C, F, F, C]);
        // Files of the devices' names elsewhere are what they are.
        std::fs::write(scratch.path().join("null"), "").unwrap();
        let elsewhere = std::sync::Arc::new(std::fs::File::open(scratch.path()).unwrap());
        assert_eq!(types(list(Some(elsewhere)))[0], F);
        assert_eq!(types(list(None)), [F, F, F, F]);
    }
}
