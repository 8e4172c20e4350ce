//! Test builds only: a stand-in for a slow disk, so that a test can show that one
//! transfer's slow writes hold up no other transfer (no device-mapper `delay` target
//! can be made on every test machine). A `.part` whose file name holds [`MARK`] takes
//! [`DELAY`] per write call, on whichever thread makes the call. A release build has
//! no such thing: [`pause`] is empty there, so no name a user picks can slow a write.

use std::fs::File;

/// The part of a file name that makes its writes slow (debug builds only).
#[cfg(debug_assertions)]
const MARK: &str = "__slow_disk__";
/// How long each write call to such a file takes at least.
#[cfg(debug_assertions)]
const DELAY: std::time::Duration = std::time::Duration::from_secs(2);

/// Sleeps [`DELAY`] when `file` is named with [`MARK`]; its name is what the kernel
/// says the descriptor points at.
#[cfg(debug_assertions)]
pub(super) fn pause(file: &File) {
    use std::os::unix::io::AsRawFd;
    let link = format!("/proc/self/fd/{}", file.as_raw_fd());
    let slow = std::fs::read_link(link).is_ok_and(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().contains(MARK))
    });
    if slow {
        std::thread::sleep(DELAY);
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub(super) fn pause(_file: &File) {}
