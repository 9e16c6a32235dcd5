//! Other processes of this host: whether a run that left something behind is still alive.

/// Whether a process with this pid exists here (one we may not signal exists too).
#[cfg(unix)]
pub(crate) fn alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    // Signal 0 only checks that the process exists; EPERM: it does, and is another user's.
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

#[cfg(not(unix))]
pub(crate) fn alive(_pid: u32) -> bool {
    true
}
