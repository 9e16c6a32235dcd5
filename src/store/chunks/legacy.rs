//! The `flock` of a store made before lock objects.

use std::fs::File;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use super::params::{FEATURES_FORMAT, LOCK_OBJECTS};
use super::{io_error, Access, ChunkError, Params, LOCK_FILE, STORE_DIR};
use crate::backend::local::LocalBackend;
use crate::backend::{BackendError, Name};
use crate::store::lock::LOCK_WAIT;

/// A store made before lock objects (without `LOCK_OBJECTS`) may be used by an older wqm, which
/// guards it with `flock` on its `lock` file only and does not see lock objects. So this wqm
/// takes that `flock` too, as the older one did (shared to write or read chunks, waiting while a
/// garbage collection holds it; exclusive to collect garbage, `Locked` at once otherwise), but
/// on a descriptor opened for writing: NFS emulates `flock` with byte-range locks, which a
/// read-only descriptor cannot take. Once a garbage collection holds it exclusively (no older
/// run is using the store) it adds `LOCK_OBJECTS` to the store's `required_features`: from then
/// on an older wqm refuses the store, and no run takes the `flock` again. A store without a
/// `lock` file, or on a read-only file system, needs none: no older wqm can open or change it.
pub(super) fn legacy_lock(
    files: &LocalBackend,
    root: &Path,
    params: &mut Params,
    access: Access,
) -> Result<Option<File>, ChunkError> {
    let lock_file = Name::new(format!("{STORE_DIR}/{LOCK_FILE}")).expect("a name of the store's");
    let file = match files.open_for_lock_blocking(&lock_file) {
        Err(e) if e.is_not_found() => return Ok(None),
        Err(BackendError::Io { source, .. })
            if source.raw_os_error() == Some(rustix::io::Errno::ROFS.raw_os_error()) =>
        {
            return Ok(None)
        }
        other => other
            .map_err(io::Error::other)
            .map_err(io_error(&root.join(LOCK_FILE)))?,
    };
    let file = lock(file, root, access)?;
    if access == Access::Exclusive {
        params.required_features.push(LOCK_OBJECTS.to_string());
        params.format = FEATURES_FORMAT;
        let params_file = Name::new(super::params_object()).expect("a name of the store's");
        files
            .save_blocking(&params_file, params.to_json().as_bytes())
            .map_err(|e| io_error(root)(e.into()))?;
    }
    // Held while the store is open: an older run that read `store.json` before it changed may
    // be waiting for it.
    Ok(Some(file))
}

/// Takes the `flock` of a store made before lock objects on `file`; a shared one waits (Ctrl-C
/// stops the wait) while an older garbage collection holds it exclusively.
fn lock(file: File, root: &Path, access: Access) -> Result<File, ChunkError> {
    let started = Instant::now();
    loop {
        let result = match access {
            Access::Shared => file.try_lock_shared(),
            Access::Exclusive => file.try_lock(),
        };
        match result {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error(root)(e)),
            Err(std::fs::TryLockError::WouldBlock) => {}
        }
        if access == Access::Exclusive || started.elapsed() > LOCK_WAIT {
            return Err(ChunkError::Locked {
                path: root.to_path_buf(),
            });
        }
        if crate::progress::is_interrupted() {
            return Err(ChunkError::Interrupted {
                path: root.to_path_buf(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
