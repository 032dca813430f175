//! The accept side of a mio reader loop (threadpool's reader, two-stage's stage 1): a listener
//! registered with the loop, accepting what is pending when it is readable, each accept judged by
//! herd-core's [`Acceptor`] (the cap on connections, the count, the pause after an error).

use std::io;
use std::time::Instant;

use herd_core::policy::{Accepted, Acceptor, Admitted};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

/// A listener registered with a loop, handing out tokens below [`Listener::FIRST_RESERVED`].
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    next_token: usize,
    acceptor: Acceptor,
    /// After an accept error: accept nothing until then.
    paused_until: Option<Instant>,
}

impl Listener {
    /// The listener's token.
    pub const TOKEN: Token = Token(usize::MAX);
    /// Tokens from here up belong to the loop (its listener, its waker).
    pub const FIRST_RESERVED: usize = usize::MAX - 2;

    /// `acceptor` is the server's (two-stage's loops each get a clone of one: one cap, one count).
    pub fn new(listener: std::net::TcpListener, registry: &Registry, acceptor: Acceptor) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        registry.register(&mut listener, Self::TOKEN, Interest::READABLE)?;
        Ok(Self { listener, next_token: 0, acceptor, paused_until: None })
    }

    /// When the loop must wake to accept again after an error (`None`: not paused).
    pub fn deadline(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Accepts every pending connection (unless paused, or the pause is over), registering each one
    /// the acceptor serves with `interest` under a fresh token and giving it to `adopt` with its
    /// place (keep it as long as the connection). One past the cap is closed at once.
    pub fn accept(
        &mut self,
        registry: &Registry,
        interest: Interest,
        mut adopt: impl FnMut(Token, TcpStream, Admitted),
    ) {
        let now = Instant::now();
        if self.paused_until.is_some_and(|t| now < t) {
            return;
        }
        self.paused_until = None;
        loop {
            let accepted = match self.listener.accept() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                accepted => accepted,
            };
            match self.acceptor.on_accept(accepted, Instant::now) {
                Accepted::Serve((mut stream, _), admitted) => {
                    let _ = stream.set_nodelay(true);
                    let token = Token(self.next_token);
                    self.next_token = (self.next_token + 1) % Self::FIRST_RESERVED;
                    if registry.register(&mut stream, token, interest).is_ok() {
                        adopt(token, stream, admitted);
                    }
                }
                Accepted::Refused => {} // dropped: closed
                Accepted::Pause(until) => {
                    // Out of descriptors, most likely (logged): pause accepting, as the policy says.
                    self.paused_until = Some(until);
                    return;
                }
            }
        }
    }
}
