//! One client connection: a task that keeps a receive submitted and sends what is owed.
//!
//! ```text
//!  loop {
//!    submit: send (owed bytes copied into the write buffer)   if none in flight and bytes are owed
//!            recv (into the read buffer)                      if none in flight, Session::may_read,
//!                                                             input not over, no WHATSAT outstanding
//!    wait for the first of: send done ─► OutputBuffer::consumed(n)
//!                           recv done ─► Session::filled ─► poll: lines ─► Service::handle ─► replies
//!                                                             └─ WHATSAT ─► fetch, in flight too
//!                           answer    ─► Session::complete ─► poll on
//!                           stall timer ─► OutputBuffer::on_timeout (close a client that takes nothing)
//!  }
//! ```
//!
//! The receive and the send are separate operations on the two halves of the socket, each owning
//! its buffer ([`Lent`]). Both can be in flight at once, so the entries a turn produces — this
//! request's reply and the next receive — reach the kernel in the same `io_uring_enter`, and
//! a client that pipelines keeps being read while its replies go out, as long as the
//! [`herd_core::policy::OutputBuffer`] allows (`may_read`: below `pause_output` owed).
//!
//! The Session's own writes (at `flush_at`, and before a WHATSAT) cannot be made on the spot: a
//! completion runtime has no "write what the socket takes now". So the task lends Session a
//! write that always says "would block": the OutputBuffer then counts the bytes as waiting for
//! the socket (checking `max_output` as any style's would), and the task submits them on its next
//! turn, before waiting on the upstream.
//!
//! A send in flight is a send the socket has not taken yet. The stall clock cannot start when the
//! socket fills, because nothing reports that; it starts, backdated, when a send has been in flight
//! for `write_stall`: one timer per connection, moved only when it fires (every `write_stall` at
//! most), instead of one per send.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Instant, SystemTime};

use herd_core::policy::{Fetch, Session};
use herd_core::{HttpResponse, PlacesLookup, Service, Timestamp, UpstreamError};
use monoio::buf::{IoBufMut, SliceMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use monoio::time::Sleep;

use crate::lent::Lent;
use crate::{Shared, upstream};

/// The most one receive asks for. 16 KiB: hundreds of pipelined requests, far more than a
/// request-response client sends per turn; the buffer lives as long as its connection.
const READ_BUF: usize = 16 * 1024;

/// Serves one client until it leaves, the policy closes it, or the socket fails.
pub(crate) async fn serve<S: Service>(stream: TcpStream, session: Session, shared: Rc<Shared<S>>) {
    let (reader, writer) = stream.into_split();
    let mut conn = Connection {
        session,
        reader: Lent::new(reader, Vec::with_capacity(READ_BUF)),
        writer: Lent::new(writer, Vec::new()),
        sent_at: None,
        answer: None,
        stall: None,
        input_over: false,
    };
    let end = conn.serve(&shared).await;
    shared.ended(end);
}

/// A WHATSAT's places exchange, in flight beside the socket's operations (on the core's backend,
/// which outlives the connection).
type Answer<'s> = Pin<Box<dyn Future<Output = (PlacesLookup, Result<HttpResponse, UpstreamError>)> + 's>>;

/// What the connection waited for.
enum Completed {
    Received(io::Result<usize>),
    Sent(io::Result<usize>),
    Answered(PlacesLookup, Result<HttpResponse, UpstreamError>),
    StallTimer,
}

struct Connection<'s> {
    session: Session,
    reader: Lent<OwnedReadHalf<TcpStream>>,
    writer: Lent<OwnedWriteHalf<TcpStream>>,
    /// When the send in flight was submitted.
    sent_at: Option<Instant>,
    answer: Option<Answer<'s>>,
    /// The stall timer, made on the first send and armed while a deadline may be due.
    stall: Option<(Pin<Box<Sleep>>, bool)>,
    /// The client sent end of stream: nothing more to read; what is owed still goes out.
    input_over: bool,
}

impl<'s> Connection<'s> {
    async fn serve<S: Service>(&mut self, shared: &'s Shared<S>) -> io::Result<()> {
        loop {
            self.submit(shared);
            if self.finished() {
                break;
            }
            match self.next().await {
                Completed::Received(Ok(0)) => self.input_over = true,
                Completed::Received(Ok(n)) => {
                    self.received(n);
                    self.handle(shared)?;
                }
                Completed::Received(Err(_)) => return Ok(()), // reset: nothing more to answer
                Completed::Sent(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Completed::Sent(Ok(n)) => {
                    self.sent_at = None;
                    self.session.output().consumed(n, Instant::now());
                }
                Completed::Sent(Err(e)) => return Err(e),
                Completed::Answered(lookup, answer) => {
                    self.session.complete(&*shared.service, lookup, answer);
                    self.handle(shared)?;
                }
                Completed::StallTimer => self.on_stall_timer()?,
            }
        }
        if self.session.is_closing()
            && let Some(mut writer) = self.writer.take()
        {
            writer.shutdown().await?;
        }
        Ok(())
    }

    /// Submits a send of what is owed and a receive, each if none is in flight and it is due.
    fn submit<S: Service>(&mut self, shared: &Shared<S>) {
        let out = self.session.output();
        if !self.writer.is_away() && out.owed() > 0 {
            if let Some(buf) = self.writer.buf() {
                buf.clear();
                buf.extend_from_slice(out.poll_transmit());
            }
            self.sent_at = Some(Instant::now());
            self.writer.lend(|mut half, buf| async move {
                let (result, buf) = half.write(buf).await;
                (result, half, buf)
            });
            if self.stall.as_ref().is_none_or(|(_, armed)| !armed) {
                self.arm_stall_timer(Instant::now() + shared.limits.write_stall);
            }
        }
        let reading = !self.input_over && self.answer.is_none() && self.session.may_read();
        if reading && !self.reader.is_away() {
            let want = self.session.read_buf().len().min(READ_BUF);
            self.reader.lend(move |mut half, buf| async move {
                let (result, slice): (_, SliceMut<Vec<u8>>) = half.read(buf.slice_mut(0..want)).await;
                (result, half, slice.into_inner())
            });
        }
    }

    /// Nothing will happen any more: input over (or an oversized line answered), nothing owed,
    /// nothing in flight but a receive that is no longer wanted.
    fn finished(&mut self) -> bool {
        (self.input_over || self.session.is_closing())
            && !self.writer.is_away()
            && self.answer.is_none()
            && self.session.output().owed() == 0
    }

    /// A receive of `n` bytes completed: hand them to the framer.
    fn received(&mut self, n: usize) {
        if let Some(buf) = self.reader.buf() {
            self.session.read_buf()[..n].copy_from_slice(&buf[..n]);
        }
        self.session.filled(n, Timestamp::from_system_time(SystemTime::now()));
    }

    /// Handles the complete lines (unless a WHATSAT is still outstanding); a WHATSAT's exchange
    /// starts and is waited on beside the socket.
    fn handle<S: Service>(&mut self, shared: &'s Shared<S>) -> io::Result<()> {
        if self.answer.is_some() {
            return Ok(());
        }
        let later = |_: &[u8]| -> io::Result<usize> { Err(io::ErrorKind::WouldBlock.into()) };
        if let Some(Fetch { places, lookup }) = self.session.poll(shared, Instant::now(), later)? {
            self.answer = Some(Box::pin(async move {
                let answer = upstream::fetch(places, &lookup.query).await;
                (lookup, answer)
            }));
        }
        Ok(())
    }

    /// Waits for the first completion: the send, the receive, the upstream answer, or the stall
    /// timer if it is armed.
    async fn next(&mut self) -> Completed {
        if let Some(due) = self.session.output().poll_timeout()
            && self.stall.as_ref().is_none_or(|(timer, armed)| !armed || timer.deadline().into_std() > due)
        {
            self.arm_stall_timer(due);
        }
        poll_fn(|cx| {
            if let Poll::Ready(sent) = self.writer.poll_back(cx) {
                return Poll::Ready(Completed::Sent(sent));
            }
            if let Poll::Ready(received) = self.reader.poll_back(cx) {
                return Poll::Ready(Completed::Received(received));
            }
            if let Some(answer) = self.answer.as_mut()
                && let Poll::Ready((lookup, result)) = answer.as_mut().poll(cx)
            {
                self.answer = None;
                return Poll::Ready(Completed::Answered(lookup, result));
            }
            if let Some((timer, armed @ true)) = self.stall.as_mut()
                && timer.as_mut().poll(cx).is_ready()
            {
                *armed = false;
                return Poll::Ready(Completed::StallTimer);
            }
            Poll::Pending
        })
        .await
    }

    fn arm_stall_timer(&mut self, at: Instant) {
        let at = monoio::time::Instant::from_std(at);
        match self.stall.as_mut() {
            Some((timer, armed)) => {
                timer.as_mut().reset(at);
                *armed = true;
            }
            None => self.stall = Some((Box::pin(monoio::time::sleep_until(at)), true)),
        }
    }

    /// The stall timer fired: a send still in flight has been waiting since it was submitted
    /// (the socket is full), which the OutputBuffer's clock is told, backdated; then the buffer
    /// judges the stall. Re-armed while something may still come due.
    fn on_stall_timer(&mut self) -> io::Result<()> {
        let now = Instant::now();
        let out = self.session.output();
        if let (true, Some(since)) = (self.writer.is_away(), self.sent_at) {
            out.blocked(since).map_err(io::Error::other)?;
        }
        out.on_timeout(now).map_err(io::Error::other)?;
        if let Some(due) = out.poll_timeout() {
            self.arm_stall_timer(due);
        }
        Ok(())
    }
}
