//! An operation in flight that owns what it works on: the rent-style half of monoio's API.
//!
//! ```text
//!  Here(half, buf) ──lend(op)──► Away(op: a future owning half and buf; its entry is submitted)
//!        ▲                                   │ the kernel completes it (a completion queue entry)
//!        └──── poll_back: Ready(result) ◄────┘ half and buf come back, the buffer to be reused
//! ```
//!
//! A readiness style lends the kernel a buffer only for the length of one system call, so a
//! borrow will do. A completion is reaped later, after the task has gone on with other work, so
//! the kernel needs the buffer for longer than any borrow the task could prove: the operation
//! takes it by value and gives it back with its result. A connection's buffers therefore live
//! in one of two places, here or in the operation, and this type says which.
//!
//! Dropping a `Lent` while its operation is away drops the operation's future: monoio submits an
//! `IORING_OP_ASYNC_CANCEL` for it and keeps the buffer until the kernel lets go. Only a task that
//! is done with the socket does that (a read cancelled that way may have consumed bytes).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// What an operation gives back: its result, the socket half and the buffer.
pub(crate) type Returned<H> = (io::Result<usize>, H, Vec<u8>);

/// A socket half and its buffer, or the operation they are lent to.
pub(crate) struct Lent<H> {
    here: Option<(H, Vec<u8>)>,
    away: Option<Pin<Box<dyn Future<Output = Returned<H>>>>>,
}

impl<H: 'static> Lent<H> {
    pub fn new(half: H, buf: Vec<u8>) -> Self {
        Self { here: Some((half, buf)), away: None }
    }

    /// An operation is in flight.
    pub fn is_away(&self) -> bool {
        self.away.is_some()
    }

    /// The buffer, while no operation has it.
    pub fn buf(&mut self) -> Option<&mut Vec<u8>> {
        self.here.as_mut().map(|(_, buf)| buf)
    }

    /// Lends the half and the buffer to the operation `op` makes of them (submitted when the
    /// connection next waits). Nothing happens while they are away already.
    pub fn lend<F>(&mut self, op: impl FnOnce(H, Vec<u8>) -> F)
    where
        F: Future<Output = Returned<H>> + 'static,
    {
        if let Some((half, buf)) = self.here.take() {
            self.away = Some(Box::pin(op(half, buf)));
        }
    }

    /// The operation's result once it has completed; the half and buffer are back here then.
    pub fn poll_back(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(op) = self.away.as_mut() else { return Poll::Pending };
        let (result, half, buf) = ready!(op.as_mut().poll(cx));
        self.away = None;
        self.here = Some((half, buf));
        Poll::Ready(result)
    }

    /// Takes the half, when no operation has it (to shut it down).
    pub fn take(&mut self) -> Option<H> {
        self.here.take().map(|(half, _)| half)
    }
}
