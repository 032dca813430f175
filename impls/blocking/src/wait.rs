//! Blocking waits with `poll(2)`, where std has none: on a socket's readiness, and on a socket and
//! a [`Wakeup`] at once (the way a thread waits for "the peer did something, or someone has work").

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Waits until `fd` is writable or `deadline` passes. Returns `Ok(false)` on timeout.
pub fn writable(fd: &impl AsRawFd, deadline: Instant) -> io::Result<bool> {
    let mut fds = [pollfd(fd.as_raw_fd(), libc::POLLOUT)];
    poll(&mut fds, Some(deadline)).map(|n| n > 0)
}

/// What [`socket_or_wakeup`] saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Seen {
    pub readable: bool,
    pub writable: bool,
    pub woken: bool,
}

/// Waits for `socket` (readable, closed, or — if `want_write` — writable), for `wakeup`, or until
/// `deadline`. Clears the wakeup it saw.
pub fn socket_or_wakeup(
    socket: Option<&impl AsRawFd>,
    want_write: bool,
    wakeup: &Wakeup,
    deadline: Option<Instant>,
) -> io::Result<Seen> {
    let mut events = libc::POLLIN | libc::POLLRDHUP;
    if want_write {
        events |= libc::POLLOUT;
    }
    let mut fds = [pollfd(wakeup.fd.as_raw_fd(), libc::POLLIN), pollfd(socket.map_or(-1, AsRawFd::as_raw_fd), events)];
    poll(&mut fds, deadline)?;
    let seen = Seen {
        woken: fds[0].revents != 0,
        readable: fds[1].revents & !libc::POLLOUT != 0,
        writable: fds[1].revents & libc::POLLOUT != 0,
    };
    if seen.woken {
        wakeup.clear();
    }
    Ok(seen)
}

/// A wake-up a thread can wait on beside a socket: an eventfd. `wake` never blocks and coalesces.
#[derive(Debug)]
pub struct Wakeup {
    fd: OwnedFd,
}

impl Wakeup {
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Ok(Self { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    pub fn wake(&self) {
        let one = 1_u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our own eventfd. A full counter (EAGAIN)
        // means a wake-up is already pending, which is all we want.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    fn clear(&self) {
        let mut count = [0_u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer from our own non-blocking eventfd.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
    }
}

impl herd_core::policy::LinkWaker for Wakeup {
    fn wake(&self) {
        Wakeup::wake(self);
    }
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
