//! A handler's access to the socket of its connection (recorded when it is accepted),
//! for the kernel options that depend on what is sent on it.

/// The socket of a connection, for a handler that sends a large file on it.
#[derive(Clone, Copy)]
pub struct Socket(pub std::os::fd::RawFd);

/// The kernel's send buffer of a connection that carries a model file (the LAN
/// mirror): with `web::SEND_BUFFER` a reader slower than loopback wakes the server every
/// few KiB, and the server's CPU then competes with the reader's.
pub const FILE_SEND_BUFFER: usize = 4 * 1024 * 1024;

/// Gives the connection of `req` [`FILE_SEND_BUFFER`]. A stuck reader still costs at
/// most that, and is dropped after `web::WRITE_TIMEOUT`.
pub fn widen_send_buffer(req: &actix_web::HttpRequest) {
    if let Some(Socket(fd)) = req.conn_data::<Socket>().copied() {
        set_int_option(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, FILE_SEND_BUFFER);
    }
}

#[cfg(target_os = "linux")]
fn set_int_option(fd: std::os::fd::RawFd, level: libc::c_int, name: libc::c_int, value: usize) {
    let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is the socket of the connection the current request arrived on,
    // open while its handler runs; the option takes a 4-byte `c_int`.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        tracing::debug!(%error, option = name, "cannot widen a connection's send buffer");
    }
}

#[cfg(not(target_os = "linux"))]
fn set_int_option(_: std::os::fd::RawFd, _: i32, _: i32, _: usize) {}
