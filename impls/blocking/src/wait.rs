//! `poll(2)` on one socket: the blocking wait the thread styles use where std has none.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Waits until `fd` is writable or `timeout` passes. Returns `Ok(false)` on timeout.
pub fn writable(fd: &impl AsRawFd, timeout: Duration) -> io::Result<bool> {
    poll_one(fd.as_raw_fd(), libc::POLLOUT, timeout).map(|revents| revents != 0)
}

/// True when the peer has closed or sent data on a socket we only ever write to (a flood link):
/// either way the link is no longer the one we think it is. Does not wait.
pub fn peer_closed(fd: &impl AsRawFd) -> bool {
    poll_one(fd.as_raw_fd(), libc::POLLIN | libc::POLLRDHUP, Duration::ZERO).map_or(true, |revents| revents != 0)
}

fn poll_one(fd: i32, events: i16, timeout: Duration) -> io::Result<i16> {
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    loop {
        // SAFETY: `pfd` is a valid pollfd for the duration of the call and we pass a count of 1.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n >= 0 {
            return Ok(pfd.revents);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
