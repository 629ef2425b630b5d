//! A timeout that is cheap to push back.
//!
//! async-io registers every new timer with the reactor, and each registration wakes the
//! reactor (a system call and an extra poll). A timeout re-created for every read or every
//! wait on a busy connection pays that per event. An [`Alarm`] keeps one timer per connection
//! direction instead: moving the deadline later costs nothing, and the timer is only re-armed
//! when it fires early, i.e. at most once per timeout period.

use std::time::Instant;

use async_io::Timer;

/// One lazily re-armed timer.
pub struct Alarm {
    /// The reactor timer; `Timer::never()` until first armed.
    timer: Timer,
    /// When the timer is set to fire, if it is set and has not fired.
    armed: Option<Instant>,
}

impl Default for Alarm {
    fn default() -> Alarm {
        Alarm {
            timer: Timer::never(),
            armed: None,
        }
    }
}

impl Alarm {
    /// Completes once the instant `due()` returns is in the past. `due` may move later while
    /// this waits (progress elsewhere); the timer then fires early and is re-armed. Dropping
    /// the future leaves the timer registered, so the next wait costs no system call.
    pub async fn wait(&mut self, due: impl Fn() -> Instant) {
        loop {
            let deadline = due();
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            match self.armed {
                Some(at) if at > now && at <= deadline => {}
                _ => {
                    self.timer.set_at(deadline);
                    self.armed = Some(deadline);
                }
            }
            (&mut self.timer).await;
            self.armed = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::time::Duration;

    #[test]
    fn fires_at_the_moved_deadline() {
        let start = Instant::now();
        let due = Cell::new(start + Duration::from_millis(20));
        let mut alarm = Alarm::default();
        async_io::block_on(async {
            // Push the deadline back once, while waiting.
            let push = async {
                Timer::after(Duration::from_millis(10)).await;
                due.set(start + Duration::from_millis(60));
                std::future::pending::<()>().await;
            };
            futures_lite::future::or(alarm.wait(|| due.get()), push).await;
        });
        assert!(start.elapsed() >= Duration::from_millis(60));
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
