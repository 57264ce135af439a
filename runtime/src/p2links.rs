//! WASI 0.2 and 0.3 lookups through absolute symbolic links, resolved inside the guest's root as
//! preview 1's are (`p1::links`, [`crate::resolve::through_absolute_link`]): `open-at`,
//! `stat-at` and `metadata-hash-at` of such a path are made from a descriptor of the preopen
//! that holds the place the link leads to (the deepest above it), made for the call, with the
//! path relative to it; so its access (read-only or not) is that preopen's. A guest not granted
//! `/` has the lookup refused as before. `open-at` (`p2fs`) and 0.2's `stat-at` (`p2dev`) move
//! their lookups with [`moved`]; the calls that do nothing else are shadowed here.

use std::os::fd::AsFd;
use std::path::Path;

use wasmtime::component::{Accessor, Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::p2::FsResult;
use wasmtime_wasi::p2::bindings::filesystem::preopens::Host as _;
use wasmtime_wasi::p2::bindings::filesystem::types::{self as p2, HostDescriptor as _};
use wasmtime_wasi::p3::bindings::filesystem::types::{self as p3, HostDescriptorWithStore};

use crate::host::P2Host;

/// A lookup made elsewhere: the preopen's descriptor (in the guest's table until [`done`]) and
/// the path beneath it.
pub(crate) struct Moved {
    rep: u32,
    pub(crate) path: String,
}

impl Moved {
    /// The preopen's descriptor, to look up from.
    pub(crate) fn fd(&self) -> Resource<Descriptor> {
        Resource::new_borrow(self.rep)
    }
}

/// Where the guest's lookup of `path` from its descriptor `fd` is made instead, when it goes
/// through an absolute link.
pub(crate) fn moved(
    host: &mut P2Host,
    fd: &Resource<Descriptor>,
    path: &str,
    follow: bool,
) -> Option<Moved> {
    let start = match host.table.get(fd) {
        Ok(Descriptor::Dir(d)) => d.dir.clone(),
        _ => return None,
    };
    if !crate::resolve::escapes(start.as_fd(), Path::new(path), follow) {
        return None;
    }
    let preopens = host.filesystem().get_directories().ok()?;
    let to = (|| {
        let (root, _) = preopens.iter().find(|(_, g)| g == "/")?;
        let Ok(Descriptor::Dir(root)) = host.table.get(root) else {
            return None;
        };
        let to = crate::resolve::through_absolute_link(
            root.dir.as_fd(),
            start.as_fd(),
            Path::new(path),
            follow,
        )?;
        let to = to.to_str()?;
        let (i, rel) = crate::resolve::holding(preopens.iter().map(|(_, g)| g.as_str()), to)?;
        tracing::debug!(%path, to, "looked up through an absolute link");
        Some((i, rel.to_string()))
    })();
    let mut kept = None;
    for (i, (d, _)) in preopens.into_iter().enumerate() {
        match &to {
            Some((at, rel)) if *at == i => {
                kept = Some(Moved {
                    rep: d.rep(),
                    path: rel.clone(),
                })
            }
            _ => drop(host.table.delete(d)),
        }
    }
    kept
}

/// Where a lookup of `path` from `fd` is made: from `moved`'s preopen if it was moved, else as
/// asked.
pub(crate) fn target(
    moved: &Option<Moved>,
    fd: Resource<Descriptor>,
    path: String,
) -> (Resource<Descriptor>, String) {
    match moved {
        Some(m) => (m.fd(), m.path.clone()),
        None => (fd, path),
    }
}

/// Forgets the descriptor [`moved`] made.
pub(crate) fn done(host: &mut P2Host, m: Moved) {
    let _ = host.table.delete(Resource::<Descriptor>::new_own(m.rep));
}

/// A 0.2 call by path: each `(descriptor, path, follow)` of `paths` moved where [`moved`] says,
/// `call`ed with them, the descriptors it made forgotten after.
async fn at2<T, const N: usize>(
    host: &mut P2Host,
    paths: [(Resource<Descriptor>, String, bool); N],
    call: impl for<'a> FnOnce(
        &'a mut P2Host,
        [(Resource<Descriptor>, String); N],
    ) -> std::pin::Pin<Box<dyn Future<Output = FsResult<T>> + Send + 'a>>,
) -> wasmtime::Result<(Result<T, p2::ErrorCode>,)> {
    let mut made = Vec::new();
    let paths = paths.map(|(fd, path, follow)| {
        let m = moved(host, &fd, &path, follow);
        let at = target(&m, fd, path);
        made.extend(m);
        at
    });
    let r = call(host, paths).await;
    for m in made {
        done(host, m);
    }
    match r {
        Ok(v) => Ok((Ok(v),)),
        Err(e) => Ok((Err(e.downcast()?),)),
    }
}

/// Shadows in `linker`, which already holds wasmtime-wasi's 0.2 and 0.3, the calls by path but
/// `open-at` (`p2fs`) and 0.2's `stat-at` (`p2dev`).
pub(crate) fn add_to_linker(linker: &mut Linker<P2Host>) -> wasmtime::Result<()> {
    use p2::PathFlags as F;
    linker.allow_shadowing(true);
    let mut types = linker.instance(crate::p2fs::TYPES)?;
    let follows = |flags: F| flags.contains(F::SYMLINK_FOLLOW);
    // A call by one path that follows no last link and takes nothing else.
    macro_rules! one_path2 {
        ($name:literal, $method:ident) => {
            types.func_wrap_async(
                concat!("[method]descriptor.", $name),
                |mut store, (fd, path): (Resource<Descriptor>, String)| {
                    Box::new(async move {
                        at2(store.data_mut(), [(fd, path, false)], |h, [(fd, path)]| {
                            Box::pin(async move { h.filesystem().$method(fd, path).await })
                        })
                        .await
                    })
                },
            )?;
        };
    }
    types.func_wrap_async(
        "[method]descriptor.metadata-hash-at",
        move |mut store, (fd, flags, path): (Resource<Descriptor>, F, String)| {
            Box::new(async move {
                at2(
                    store.data_mut(),
                    [(fd, path, follows(flags))],
                    move |h, [(fd, path)]| {
                        Box::pin(
                            async move { h.filesystem().metadata_hash_at(fd, flags, path).await },
                        )
                    },
                )
                .await
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.set-times-at",
        move |mut store,
              (fd, flags, path, atim, mtim): (
            Resource<Descriptor>,
            F,
            String,
            p2::NewTimestamp,
            p2::NewTimestamp,
        )| {
            Box::new(async move {
                at2(
                    store.data_mut(),
                    [(fd, path, follows(flags))],
                    move |h, [(fd, path)]| {
                        Box::pin(async move {
                            h.filesystem()
                                .set_times_at(fd, flags, path, atim, mtim)
                                .await
                        })
                    },
                )
                .await
            })
        },
    )?;
    one_path2!("create-directory-at", create_directory_at);
    one_path2!("remove-directory-at", remove_directory_at);
    one_path2!("unlink-file-at", unlink_file_at);
    one_path2!("readlink-at", readlink_at);
    types.func_wrap_async(
        "[method]descriptor.symlink-at",
        // The link's content is kept as given; only where it is made moves.
        |mut store, (fd, target, path): (Resource<Descriptor>, String, String)| {
            Box::new(async move {
                at2(store.data_mut(), [(fd, path, false)], |h, [(fd, path)]| {
                    Box::pin(async move { h.filesystem().symlink_at(fd, target, path).await })
                })
                .await
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.rename-at",
        |mut store,
         (fd, path, to_fd, to_path): (
            Resource<Descriptor>,
            String,
            Resource<Descriptor>,
            String,
        )| {
            let paths = [(fd, path, false), (to_fd, to_path, false)];
            Box::new(async move {
                at2(
                    store.data_mut(),
                    paths,
                    |h, [(fd, path), (to_fd, to_path)]| {
                        Box::pin(
                            async move { h.filesystem().rename_at(fd, path, to_fd, to_path).await },
                        )
                    },
                )
                .await
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.link-at",
        move |mut store,
              (fd, flags, path, to_fd, to_path): (
            Resource<Descriptor>,
            F,
            String,
            Resource<Descriptor>,
            String,
        )| {
            let paths = [(fd, path, follows(flags)), (to_fd, to_path, false)];
            Box::new(async move {
                at2(
                    store.data_mut(),
                    paths,
                    move |h, [(fd, path), (to_fd, to_path)]| {
                        Box::pin(async move {
                            h.filesystem()
                                .link_at(fd, flags, path, to_fd, to_path)
                                .await
                        })
                    },
                )
                .await
            })
        },
    )?;
    use p3::PathFlags as F3;
    let mut types3 = linker.instance(crate::p2fs::TYPES3)?;
    let follows3 = |flags: F3| flags.contains(F3::SYMLINK_FOLLOW);
    /// wasmtime-wasi's 0.3 call `$method`.
    macro_rules! with_store {
        ($method:ident) => {
            <WasiFilesystem as HostDescriptorWithStore<P2Host>>::$method
        };
    }
    // A call by one path that follows no last link and takes nothing else.
    macro_rules! one_path3 {
        ($name:literal, $method:ident) => {
            types3.func_wrap_concurrent(
                concat!("[method]descriptor.", $name),
                |accessor: &Accessor<P2Host>, (fd, path): (Resource<Descriptor>, String)| {
                    Box::pin(at3(accessor, [(fd, path, false)], |fs, [(fd, path)]| {
                        Box::pin(with_store!($method)(fs, fd, path))
                    }))
                },
            )?;
        };
    }
    types3.func_wrap_concurrent(
        "[method]descriptor.stat-at",
        move |accessor: &Accessor<P2Host>,
              (fd, flags, path): (Resource<Descriptor>, F3, String)| {
            Box::pin(at3(
                accessor,
                [(fd, path, follows3(flags))],
                move |fs, [(fd, path)]| Box::pin(with_store!(stat_at)(fs, fd, flags, path)),
            ))
        },
    )?;
    types3.func_wrap_concurrent(
        "[method]descriptor.metadata-hash-at",
        move |accessor: &Accessor<P2Host>,
              (fd, flags, path): (Resource<Descriptor>, F3, String)| {
            Box::pin(at3(
                accessor,
                [(fd, path, follows3(flags))],
                move |fs, [(fd, path)]| {
                    Box::pin(with_store!(metadata_hash_at)(fs, fd, flags, path))
                },
            ))
        },
    )?;
    types3.func_wrap_concurrent(
        "[method]descriptor.set-times-at",
        move |accessor: &Accessor<P2Host>,
              (fd, flags, path, atim, mtim): (
            Resource<Descriptor>,
            F3,
            String,
            p3::NewTimestamp,
            p3::NewTimestamp,
        )| {
            Box::pin(at3(
                accessor,
                [(fd, path, follows3(flags))],
                move |fs, [(fd, path)]| {
                    Box::pin(with_store!(set_times_at)(fs, fd, flags, path, atim, mtim))
                },
            ))
        },
    )?;
    one_path3!("create-directory-at", create_directory_at);
    one_path3!("remove-directory-at", remove_directory_at);
    one_path3!("unlink-file-at", unlink_file_at);
    one_path3!("readlink-at", readlink_at);
    types3.func_wrap_concurrent(
        "[method]descriptor.symlink-at",
        // The link's content is kept as given; only where it is made moves.
        |accessor: &Accessor<P2Host>,
         (fd, target, path): (Resource<Descriptor>, String, String)| {
            Box::pin(at3(accessor, [(fd, path, false)], |fs, [(fd, path)]| {
                Box::pin(with_store!(symlink_at)(fs, fd, target, path))
            }))
        },
    )?;
    types3.func_wrap_concurrent(
        "[method]descriptor.rename-at",
        |accessor: &Accessor<P2Host>,
         (fd, path, to_fd, to_path): (
            Resource<Descriptor>,
            String,
            Resource<Descriptor>,
            String,
        )| {
            let paths = [(fd, path, false), (to_fd, to_path, false)];
            Box::pin(at3(
                accessor,
                paths,
                |fs, [(fd, path), (to_fd, to_path)]| {
                    Box::pin(with_store!(rename_at)(fs, fd, path, to_fd, to_path))
                },
            ))
        },
    )?;
    types3.func_wrap_concurrent(
        "[method]descriptor.link-at",
        move |accessor: &Accessor<P2Host>,
              (fd, flags, path, to_fd, to_path): (
            Resource<Descriptor>,
            F3,
            String,
            Resource<Descriptor>,
            String,
        )| {
            let paths = [(fd, path, follows3(flags)), (to_fd, to_path, false)];
            Box::pin(at3(
                accessor,
                paths,
                move |fs, [(fd, path), (to_fd, to_path)]| {
                    Box::pin(with_store!(link_at)(fs, fd, flags, path, to_fd, to_path))
                },
            ))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A 0.3 call by path: each `(descriptor, path, follow)` of `paths` moved where [`moved`] says,
/// `call`ed with them, the descriptors it made forgotten after.
async fn at3<T, const N: usize>(
    accessor: &Accessor<P2Host>,
    paths: [(Resource<Descriptor>, String, bool); N],
    call: impl for<'a> FnOnce(
        &'a Accessor<P2Host, WasiFilesystem>,
        [(Resource<Descriptor>, String); N],
    ) -> std::pin::Pin<
        Box<dyn Future<Output = wasmtime_wasi::p3::filesystem::FilesystemResult<T>> + Send + 'a>,
    >,
) -> wasmtime::Result<(Result<T, p3::ErrorCode>,)> {
    let mut made = Vec::new();
    let paths = accessor.with(|mut access| {
        paths.map(|(fd, path, follow)| {
            let m = moved(access.get(), &fd, &path, follow);
            let at = target(&m, fd, path);
            made.extend(m);
            at
        })
    });
    let fs = accessor.with_getter::<WasiFilesystem>(<P2Host as WasiFilesystemView>::filesystem);
    let r = call(&fs, paths).await;
    accessor.with(|mut access| {
        for m in made {
            done(access.get(), m);
        }
    });
    match r {
        Ok(v) => Ok((Ok(v),)),
        Err(e) => Ok((Err(e.downcast()?),)),
    }
}
