//! The queue of ready connections: idle workers park at once, except one that spins a little.
//!
//! ```text
//!  push ──► lock: items.push_back ── a worker spinning? ── yes: it will take it (no syscall)
//!                                                     └── no: wake one parked worker (futex)
//!  pop ──► no other worker spinning? spin until an item shows (crossbeam's Backoff: pause,
//!          then a few yields) or the back-off is over
//!          take one (waking another parked worker if more wait and nobody spins), or park
//!          on the condition variable until pushed to
//! ```
//!
//! A channel whose receivers each spin and yield before they sleep (crossbeam's) costs nothing with
//! a few receivers, but this pool has 64 mostly idle workers: every hand-off woke one, which ran a
//! request, went idle and spun and yielded on its own before parking — 35 `sched_yield` per IAMAT
//! at herd-update 5k/s. The rule here is the Go scheduler's: at most [`MAX_SPINNING`] idle workers
//! spin (one that spins catches work arriving within microseconds without a wake-up); every other
//! idle worker parks at once; a push wakes a parked worker only when nobody spins; a worker that
//! takes an item and sees more wakes one more, so a burst fans out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crossbeam_utils::Backoff;

/// Idle workers allowed to spin at once.
pub const MAX_SPINNING: usize = 1;

/// A FIFO of work items shared by one pusher side and many workers.
#[derive(Debug)]
pub struct ReadyQueue<T> {
    state: Mutex<State<T>>,
    pushed: Condvar,
    /// Items queued, readable without the lock (what a spinning worker watches).
    queued: AtomicUsize,
    /// Workers spinning now (at most [`MAX_SPINNING`] stay past the increment).
    spinning: AtomicUsize,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    /// Workers parked on `pushed`.
    parked: usize,
}

impl<T> Default for ReadyQueue<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State { items: VecDeque::new(), parked: 0 }),
            pushed: Condvar::new(),
            queued: AtomicUsize::new(0),
            spinning: AtomicUsize::new(0),
        }
    }
}

impl<T> ReadyQueue<T> {
    pub fn push(&self, item: T) {
        let mut state = self.lock();
        state.items.push_back(item);
        self.queued.fetch_add(1, SeqCst);
        // Read under the lock: a spinner that stops spinning after this read takes the lock next
        // and finds the item, so nothing is left behind unwoken.
        let wake = state.parked > 0 && self.spinning.load(SeqCst) == 0;
        drop(state);
        if wake {
            self.pushed.notify_one();
        }
    }

    /// The next item, waiting for one as long as it takes.
    pub fn pop(&self) -> T {
        if self.spinning.fetch_add(1, SeqCst) < MAX_SPINNING {
            let backoff = Backoff::new();
            while self.queued.load(SeqCst) == 0 && !backoff.is_completed() {
                backoff.snooze();
            }
        }
        // No longer spinning before taking the lock: a push that saw this worker spinning put its
        // item in before this worker looks, and a worker that takes an item and leaves more sees
        // nobody spinning and wakes the next.
        self.spinning.fetch_sub(1, SeqCst);
        let mut state = self.lock();
        loop {
            if let Some(item) = self.take(&mut state) {
                return item;
            }
            state.parked += 1;
            state = self.pushed.wait(state).unwrap_or_else(PoisonError::into_inner);
            state.parked -= 1;
        }
    }

    /// Takes the front item; if more wait and nobody spins, wakes a parked worker for them.
    fn take(&self, state: &mut State<T>) -> Option<T> {
        let item = state.items.pop_front()?;
        self.queued.fetch_sub(1, SeqCst);
        if !state.items.is_empty() && state.parked > 0 && self.spinning.load(SeqCst) == 0 {
            self.pushed.notify_one();
        }
        Some(item)
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    use super::*;

    #[test]
    fn items_come_out_in_order_to_one_worker() {
        let queue = ReadyQueue::default();
        for i in 0..5 {
            queue.push(i);
        }
        assert_eq!((0..5).map(|_| queue.pop()).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    }

    /// Every item reaches a worker, however the pushes interleave with workers spinning and
    /// parking: a lost wake-up would leave an item queued and this test waiting forever.
    #[test]
    fn no_item_is_left_behind_by_many_workers() {
        const WORKERS: usize = 16;
        const ITEMS: usize = 20_000;
        let queue = Arc::new(ReadyQueue::default());
        let (done, finished) = mpsc::channel();
        for _ in 0..WORKERS {
            let (queue, done) = (Arc::clone(&queue), done.clone());
            thread::spawn(move || {
                loop {
                    let item: usize = queue.pop();
                    if done.send(item).is_err() {
                        return;
                    }
                }
            });
        }
        let mut seen = vec![false; ITEMS];
        for burst in (0..ITEMS).collect::<Vec<_>>().chunks(97) {
            for &i in burst {
                queue.push(i);
            }
            // Let the workers go idle now and then, so pushes also meet parked workers.
            if burst[0] % 5 == 0 {
                thread::sleep(Duration::from_micros(200));
            }
        }
        for _ in 0..ITEMS {
            let i = finished.recv_timeout(Duration::from_secs(10)).expect("an item was left in the queue");
            assert!(!std::mem::replace(&mut seen[i], true), "item {i} taken twice");
        }
        assert!(queue.spinning.load(SeqCst) <= MAX_SPINNING);
    }
}
