//! Writing a client's replies from a blocking thread, under herd-core's [`OutputBuffer`] rules.

use std::io::{self, Write};
use std::time::Instant;

use herd_core::policy::{Close, OutputBuffer};

use crate::wait;

/// Why writing to a client stopped.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The policy gave up on the client (it reads too slowly): worth a log line.
    #[error(transparent)]
    Closed(#[from] Close),
    /// The connection broke: the client's business.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Writes everything owed on a blocking socket whose send timeout (`SO_SNDTIMEO`) is the stall
/// limit: a write that times out without progress has stalled since it began.
pub fn flush_blocking(stream: &std::net::TcpStream, out: &mut OutputBuffer) -> Result<(), WriteError> {
    while out.owed() > 0 {
        let began = Instant::now();
        match (&mut &*stream).write(out.poll_transmit()) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
            Ok(n) => out.consumed(n, Instant::now()),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                out.blocked(began)?;
                out.on_timeout(Instant::now())?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes everything owed on a non-blocking socket, waiting in `poll(2)` while it is full, for no
/// longer than the buffer's stall deadline.
pub fn flush<S>(stream: &S, out: &mut OutputBuffer) -> Result<(), WriteError>
where
    S: std::os::fd::AsRawFd,
    for<'a> &'a S: Write,
{
    while out.owed() > 0 {
        let mut writer = stream;
        match writer.write(out.poll_transmit()) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
            Ok(n) => out.consumed(n, Instant::now()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                out.blocked(Instant::now())?;
                if let Some(deadline) = out.poll_timeout() {
                    wait::writable(stream, deadline)?;
                }
                out.on_timeout(Instant::now())?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
