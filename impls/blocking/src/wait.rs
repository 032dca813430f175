//! Blocking waits with `poll(2)` on one socket, where std has none.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Waits until `fd` is writable or `deadline` passes. Returns `Ok(false)` on timeout.
pub fn writable(fd: &impl AsRawFd, deadline: Instant) -> io::Result<bool> {
    let mut fds = [pollfd(fd.as_raw_fd(), libc::POLLOUT)];
    poll(&mut fds, Some(deadline)).map(|n| n > 0)
}

/// True when the peer has closed or sent data on a socket we only ever write to (a flood link):
/// either way the link is no longer the one we think it is. Does not wait.
pub fn peer_closed(fd: &impl AsRawFd) -> bool {
    let mut fds = [pollfd(fd.as_raw_fd(), libc::POLLIN | libc::POLLRDHUP)];
    poll(&mut fds, Some(Instant::now())).map_or(true, |n| n > 0)
}

fn pollfd(fd: i32, events: i16) -> libc::pollfd {
    libc::pollfd { fd, events, revents: 0 }
}

fn poll(fds: &mut [libc::pollfd], deadline: Option<Instant>) -> io::Result<i32> {
    loop {
        let ms = deadline.map_or(-1, |d| {
            let left = d.saturating_duration_since(Instant::now());
            // Round up: waking a little late is harmless, waking early would spin.
            i32::try_from((left + Duration::from_nanos(999_999)).as_millis()).unwrap_or(i32::MAX)
        });
        // SAFETY: `fds` is a valid, live slice of pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n >= 0 {
            return Ok(n);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
