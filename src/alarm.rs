//! Timeouts that cost the reactor next to nothing.
//!
//! async-io registers every new timer with the reactor and wakes the reactor for it (an eventfd
//! write, an extra poll, a read and a re-arm). A connection or tunnel that set a timer of its
//! own would pay that each time. The proxy's timeouts (header, idle, tunnel, connect) are
//! instead kept here, in one process-wide table of deadlines that one task, [`watch`], looks
//! after with a single async-io timer: adding a deadline later than the one that timer is set
//! for costs no system call, and the timer is set again only when a deadline comes earlier than
//! it or when it fires. The watcher wakes a task only when its deadline passes. [`watch`] must
//! run on the executor (`server.rs` spawns it) for any of these timeouts to fire.
//!
//! An [`Alarm`] keeps one deadline per connection direction: moving it later costs nothing (the
//! entry fires early and is re-armed, at most once per timeout period).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_io::Timer;

/// The deadlines and when the watcher next looks at them.
struct Table {
    /// Pending deadlines, earliest first; the `u64` tells apart alarms due at the same instant.
    pending: BTreeMap<(Instant, u64), Waker>,
    /// When the watcher's timer fires next (`None`: it is not set). It may be the instant of
    /// an entry removed since; the watcher then just plans again.
    wakes: Option<Instant>,
    /// The watcher task, woken when a deadline earlier than `wakes` is added.
    watcher: Option<Waker>,
}

/// The process-wide table.
static TABLE: Mutex<Table> = Mutex::new(Table {
    pending: BTreeMap::new(),
    wakes: None,
    watcher: None,
});
/// The next entry key.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The table, even if a thread panicked while holding it (its entries stay consistent).
fn table() -> MutexGuard<'static, Table> {
    TABLE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Adds a deadline; wakes the watcher only if its timer would fire too late for it.
fn insert(key: (Instant, u64), waker: Waker) {
    let mut t = table();
    t.pending.insert(key, waker);
    let watcher = match t.wakes {
        Some(at) if at <= key.0 => None,
        _ => t.watcher.take(),
    };
    drop(t);
    if let Some(w) = watcher {
        w.wake();
    }
}

/// Removes a deadline (a no-op if it already fired).
fn remove(key: (Instant, u64)) {
    table().pending.remove(&key);
}

/// Looks after the table for as long as the process serves: wakes the tasks whose deadlines
/// passed, and keeps one timer set no later than the earliest deadline.
pub async fn watch() {
    let mut timer = Timer::never();
    std::future::poll_fn(|cx| -> Poll<()> {
        loop {
            let now = Instant::now();
            let mut t = table();
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
                continue;
            }
            let earliest = t.pending.first_key_value().map(|((at, _), _)| *at);
            // A timer that fires later than the earliest deadline is set again; one that fires
            // earlier (its entry was removed) is left: it fires, finds nothing, and plans again.
            if let Some(at) = earliest.filter(|&at| t.wakes.is_none_or(|w| at < w || w <= now)) {
                timer.set_at(at);
                t.wakes = Some(at);
            }
            if t.watcher.as_ref().is_none_or(|w| !w.will_wake(cx.waker())) {
                t.watcher = Some(cx.waker().clone());
            }
            drop(t);
            match Pin::new(&mut timer).poll(cx) {
                Poll::Ready(_) => table().wakes = None,
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
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
    use std::sync::Mutex;

    /// The table is the process's: two tests that each run a watcher at once would share it,
    /// and one could end with its timer while the other still counts on it.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    #[test]
    fn fires_at_the_moved_deadline() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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
            let test = futures_lite::future::or(alarm.wait(|| due.get()), push);
            futures_lite::future::or(test, async {
                watch().await;
                unreachable!()
            })
            .await;
        });
        assert!(start.elapsed() >= Duration::from_millis(60));
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn earlier_deadline_wakes_the_watcher() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let start = Instant::now();
        async_io::block_on(futures_lite::future::or(
            futures_lite::future::or(
                sleep(Duration::from_secs(30)),
                sleep(Duration::from_millis(20)),
            ),
            async {
                watch().await;
                unreachable!()
            },
        ));
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
