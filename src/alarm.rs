//! Timeouts that cost the reactor nothing.
//!
//! async-io registers every new timer with the reactor and wakes the reactor for it (an eventfd
//! write, an extra poll, a read and a re-arm), and while any of its timers is pending every
//! reactor wait also sets a timerfd. The proxy's timeouts (header, idle, tunnel, connect) are
//! instead kept here, in one process-wide table of deadlines watched by one thread that sleeps
//! until the earliest: adding a deadline later than the earliest costs no system call, and the
//! reactor, with no timer of its own pending, waits without a timeout. The thread wakes a task
//! only when its deadline passes.
//!
//! An [`Alarm`] keeps one deadline per connection direction: moving it later costs nothing (the
//! entry fires early and is re-armed, at most once per timeout period).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, Once, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The deadlines and when the watcher next looks at them.
struct Table {
    /// Pending deadlines, earliest first; the `u64` tells apart alarms due at the same instant.
    pending: BTreeMap<(Instant, u64), Waker>,
    /// When the watcher wakes next (`None`: only when signalled). It may be the instant of an
    /// entry removed since; the watcher then just plans again.
    wakes: Option<Instant>,
}

/// The process-wide table.
static TABLE: Mutex<Table> = Mutex::new(Table {
    pending: BTreeMap::new(),
    wakes: None,
});
/// Signalled when a deadline earlier than the watcher's next wake-up is added.
static EARLIER: Condvar = Condvar::new();
/// Starts the watching thread once.
static WATCHER: Once = Once::new();
/// The next entry key.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The table, even if a thread panicked while holding it (its entries stay consistent).
fn table() -> MutexGuard<'static, Table> {
    TABLE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Adds a deadline; signals the watcher only if it would wake too late for it (so a deadline
/// later than another one costs no system call).
fn insert(key: (Instant, u64), waker: Waker) {
    WATCHER.call_once(|| {
        // Without the thread no timeout would fire; a process that cannot start one has
        // bigger problems, and the error is reported like any other failed spawn.
        if let Err(e) = std::thread::Builder::new()
            .name("alarm".into())
            .stack_size(64 * 1024)
            .spawn(watch)
        {
            eprintln!("smolproxy: cannot start the timeout thread: {e}");
        }
    });
    let mut t = table();
    t.pending.insert(key, waker);
    let earlier = t.wakes.is_none_or(|at| key.0 < at);
    if earlier {
        t.wakes = Some(key.0);
    }
    drop(t);
    if earlier {
        EARLIER.notify_one();
    }
}

/// Removes a deadline (a no-op if it already fired).
fn remove(key: (Instant, u64)) {
    table().pending.remove(&key);
}

/// The watching thread: sleeps until the earliest deadline, wakes the tasks due.
fn watch() {
    let mut t = table();
    loop {
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(entry) = t.pending.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        if !due.is_empty() {
            drop(t);
            due.into_iter().for_each(Waker::wake);
            t = table();
            continue;
        }
        t.wakes = t.pending.first_key_value().map(|((at, _), _)| *at);
        t = match t.wakes {
            Some(at) => {
                let wait = at.saturating_duration_since(now);
                EARLIER
                    .wait_timeout(t, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => EARLIER.wait(t).unwrap_or_else(PoisonError::into_inner),
        };
    }
}

/// One lazily re-armed deadline; its entry is removed when it is dropped.
#[derive(Default)]
pub struct Alarm {
    /// The table entry, if one is set (it may have fired already if its instant is past).
    armed: Option<(Instant, u64)>,
    /// The waker the entry holds.
    waker: Option<Waker>,
}

impl Alarm {
    /// Completes once the instant `due()` returns is in the past. `due` may move later while
    /// this waits (progress elsewhere); the entry then fires early and is re-armed. Dropping
    /// the future leaves the entry set, so the next wait costs nothing.
    pub async fn wait(&mut self, due: impl Fn() -> Instant) {
        std::future::poll_fn(|cx| self.poll_at(cx, due())).await
    }

    /// Ready once `deadline` is past; otherwise makes sure an entry no later than `deadline`
    /// (and not yet fired) will wake this task. `deadline` may move later between polls.
    pub fn poll_at(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let now = Instant::now();
        if now >= deadline {
            self.disarm();
            return Poll::Ready(());
        }
        let fresh = matches!(self.armed, Some((at, _)) if at > now && at <= deadline);
        let same_task = self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if !(fresh && same_task) {
            self.disarm();
            let key = (deadline, NEXT_ID.fetch_add(1, Ordering::Relaxed));
            insert(key, cx.waker().clone());
            self.armed = Some(key);
            self.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Removes the entry, if any.
    fn disarm(&mut self) {
        if let Some(key) = self.armed.take() {
            remove(key);
        }
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// Completes after `d` (a one-shot [`Alarm`]; nothing is registered until first polled).
pub fn sleep(d: Duration) -> Sleep {
    Sleep {
        at: Instant::now() + d,
        alarm: Alarm::default(),
    }
}

/// The future [`sleep`] returns.
pub struct Sleep {
    /// When it completes.
    at: Instant,
    /// Its entry.
    alarm: Alarm,
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.alarm.poll_at(cx, this.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn fires_at_the_moved_deadline() {
        let start = Instant::now();
        let due = Cell::new(start + Duration::from_millis(20));
        let mut alarm = Alarm::default();
        async_io::block_on(async {
            // Push the deadline back once, while waiting.
            let push = async {
                sleep(Duration::from_millis(10)).await;
                due.set(start + Duration::from_millis(60));
                std::future::pending::<()>().await;
            };
            futures_lite::future::or(alarm.wait(|| due.get()), push).await;
        });
        assert!(start.elapsed() >= Duration::from_millis(60));
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn earlier_deadline_wakes_the_watcher() {
        let start = Instant::now();
        async_io::block_on(futures_lite::future::or(
            sleep(Duration::from_secs(30)),
            sleep(Duration::from_millis(20)),
        ));
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
