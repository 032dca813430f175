//! Structured server events. The core decides *what* is logged; the caller's [`EventSink`] decides
//! where it goes and stamps the time, and must never block (buffer, flush on a timer).

use std::sync::Arc;

use serde::Serialize;

/// One log line's content.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Listening {
        addr: String,
    },
    LinkUp {
        peer: String,
        direction: Direction,
    },
    LinkDown {
        peer: String,
        reason: String,
    },
    /// A link handshake failed: `peer` (as it named itself) did not prove it holds the herd key.
    LinkRefused {
        peer: String,
        direction: Direction,
        reason: String,
    },
    /// A connection that is not an authenticated flood link sent an `AT` line (logged once per
    /// connection; every such line is counted in `unauthenticated_at`). Nothing was stored.
    UnauthenticatedAt {
        line: String,
    },
    /// A connection was closed at accept: the server held `max_connections` (logged once per
    /// episode, which ends when a connection is admitted again; each is counted).
    ConnectionsRefused {
        max_connections: usize,
    },
    /// The location store is full and began evicting the clients stored longest ago (logged once
    /// per episode: again only after a second without evictions; each is counted).
    StoreEvicting {
        max_clients: usize,
    },
    /// Updates toward `peer` began to be dropped (logged once per episode).
    FloodsDropping {
        peer: String,
        reason: String,
    },
    /// The episode ended: an update was queued again after `dropped` were lost.
    FloodsResumed {
        peer: String,
        dropped: u64,
    },
    Error {
        context: String,
        message: String,
    },
    Input {
        line: String,
    },
    Output {
        text: String,
    },
    Stopping,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Where events go. Implementations must return quickly (queue, never wait on a disk).
pub trait EventSink: Send + Sync + std::fmt::Debug {
    fn record(&self, event: Event);
}

/// A cheap handle the service and styles log through.
#[derive(Clone, Debug, Default)]
pub struct EventLog {
    sink: Option<Arc<dyn EventSink>>,
    log_io: bool,
}

impl EventLog {
    /// `log_io` adds every input and output line (part of what a run measures, so off by default).
    pub fn new(sink: Arc<dyn EventSink>, log_io: bool) -> Self {
        Self { sink: Some(sink), log_io }
    }

    /// A log that drops everything.
    pub fn discard() -> Self {
        Self::default()
    }

    pub fn event(&self, event: Event) {
        if let Some(sink) = &self.sink {
            sink.record(event);
        }
    }

    pub fn error(&self, context: &str, message: impl std::fmt::Display) {
        self.event(Event::Error { context: context.to_owned(), message: message.to_string() });
    }

    pub fn input(&self, line: &[u8]) {
        if self.log_io {
            self.event(Event::Input { line: String::from_utf8_lossy(line).into_owned() });
        }
    }

    pub fn output(&self, bytes: &[u8]) {
        if self.log_io && !bytes.is_empty() {
            self.event(Event::Output { text: String::from_utf8_lossy(bytes).into_owned() });
        }
    }
}
