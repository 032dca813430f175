//! The accept side of a mio reader loop (threadpool's reader, two-stage's stage 1), paused after
//! errors by herd-core's [`AcceptBackoff`] and capped by its [`Admission`].

use std::io;
use std::time::Instant;

use herd_core::policy::{AcceptBackoff, Admission, Admitted};
use herd_core::{EventLog, Limits};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

/// A listener registered with a loop, handing out tokens below [`Acceptor::FIRST_RESERVED`].
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    next_token: usize,
    backoff: AcceptBackoff,
    admission: Admission,
    /// After an accept error: accept nothing until then.
    paused_until: Option<Instant>,
}

impl Acceptor {
    /// The listener's token.
    pub const TOKEN: Token = Token(usize::MAX);
    /// Tokens from here up belong to the loop (its listener, its waker).
    pub const FIRST_RESERVED: usize = usize::MAX - 2;

    /// `admission` is shared by every acceptor of one server (two-stage has one per loop).
    pub fn new(
        listener: std::net::TcpListener,
        registry: &Registry,
        limits: &Limits,
        admission: Admission,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        registry.register(&mut listener, Self::TOKEN, Interest::READABLE)?;
        Ok(Self { listener, next_token: 0, backoff: AcceptBackoff::new(limits), admission, paused_until: None })
    }

    /// When the loop must wake to accept again after an error (`None`: not paused).
    pub fn deadline(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Accepts every pending connection (unless paused, or the pause is over), registering each one
    /// admitted with `interest` under a fresh token and giving it to `adopt` with its place (keep it
    /// as long as the connection). One past the cap is closed at once.
    pub fn accept(
        &mut self,
        registry: &Registry,
        interest: Interest,
        log: &EventLog,
        mut adopt: impl FnMut(Token, TcpStream, Admitted),
    ) {
        let now = Instant::now();
        if self.paused_until.is_some_and(|t| now < t) {
            return;
        }
        self.paused_until = None;
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    self.backoff.on_accepted();
                    let Some(admitted) = self.admission.admit() else { continue }; // dropped: closed
                    let _ = stream.set_nodelay(true);
                    let token = Token(self.next_token);
                    self.next_token = (self.next_token + 1) % Self::FIRST_RESERVED;
                    if registry.register(&mut stream, token, interest).is_ok() {
                        adopt(token, stream, admitted);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors, most likely: pause accepting, as the policy says.
                    log.error("accept", e);
                    self.paused_until = Some(self.backoff.on_error(Instant::now()));
                    return;
                }
            }
        }
    }
}
