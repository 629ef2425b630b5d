//! Bounded pools of spare byte buffers, so that a buffer a connection stops using is reused by
//! the next one instead of freed and allocated (and zeroed) again.
//!
//! Buffers are only held while they are in use: an idle connection or tunnel gives its buffer
//! back. Reuse also keeps the heap from filling with holes that long-lived tunnel state gets
//! scattered into (measured: per-idle-tunnel memory depends on it). A pool shrinks when idle:
//! [`Spares::trim`], called by the server's janitor, frees the spares that sat unused since
//! the last call, so a burst's buffers do not stay for the life of the process.

use std::sync::Mutex;

/// A pool of buffers of one size.
pub struct Spares {
    /// Length of every buffer handed out.
    size: usize,
    /// Most buffers kept.
    max: usize,
    /// The spare buffers, behind the pool's lock.
    kept: Mutex<Kept>,
}

/// A pool's spare buffers.
struct Kept {
    /// Spares, the most recently given back last (taken first).
    list: Vec<Vec<u8>>,
    /// Fewest spares in `list` since the last trim: those below it were not needed.
    low: usize,
}

impl Spares {
    /// An empty pool of `size`-byte buffers keeping at most `max` of them.
    pub const fn new(size: usize, max: usize) -> Spares {
        Spares {
            size,
            max,
            kept: Mutex::new(Kept {
                list: Vec::new(),
                low: 0,
            }),
        }
    }

    /// A buffer of the pool's size, spare or new; it goes back to the pool when dropped.
    pub fn take(&'static self) -> Lease {
        let spare = self.kept.lock().ok().and_then(|mut kept| {
            let buf = kept.list.pop();
            kept.low = kept.low.min(kept.list.len());
            buf
        });
        Lease {
            buf: spare.unwrap_or_else(|| vec![0; self.size]),
            home: self,
        }
    }

    /// Frees the spares that no one took since the last call: the oldest ones, as many as the
    /// pool never went below. Called periodically, so a pool that a burst filled returns to
    /// what the steady load uses, and to nothing when the proxy is idle.
    pub fn trim(&self) {
        if let Ok(mut kept) = self.kept.lock() {
            let unused = kept.low;
            kept.list.drain(..unused);
            kept.list.shrink_to_fit();
            kept.low = kept.list.len();
        }
    }
}

/// A buffer from a [`Spares`] pool. Code may grow it; a grown buffer is freed on drop rather
/// than kept.
pub struct Lease {
    pub buf: Vec<u8>,
    home: &'static Spares,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.buf.len() != self.home.size {
            return;
        }
        if let Ok(mut kept) = self.home.kept.lock() {
            if kept.list.len() < self.home.max {
                kept.list.push(std::mem::take(&mut self.buf));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_up_to_the_bound_and_grown_ones_are_not_kept() {
        static POOL: Spares = Spares::new(8, 2);
        let (mut a, b, c) = (POOL.take(), POOL.take(), POOL.take());
        assert_eq!((a.buf.len(), b.buf.len(), c.buf.len()), (8, 8, 8));
        a.buf[0] = 7;
        let marked = a.buf.as_ptr();
        drop((a, b, c));
        assert_eq!(
            POOL.kept.lock().unwrap().list.len(),
            2,
            "at most `max` kept"
        );
        let again = [POOL.take(), POOL.take()];
        assert!(
            again.iter().any(|l| l.buf.as_ptr() == marked),
            "a kept buffer comes back"
        );
        drop(again);
        let mut grown = POOL.take();
        grown.buf.resize(16, 0);
        let before = POOL.kept.lock().unwrap().list.len();
        drop(grown);
        assert_eq!(
            POOL.kept.lock().unwrap().list.len(),
            before,
            "a grown buffer is freed"
        );
    }

    #[test]
    fn trim_frees_only_the_spares_left_unused_since_the_last_trim() {
        static POOL: Spares = Spares::new(8, 4);
        let len = || POOL.kept.lock().unwrap().list.len();
        drop([POOL.take(), POOL.take(), POOL.take(), POOL.take()]);
        assert_eq!(len(), 4);
        POOL.trim();
        assert_eq!(
            len(),
            4,
            "the spares were taken since the start: all were needed"
        );
        // One taken at a time: three of the four were never needed in this period.
        drop(POOL.take());
        POOL.trim();
        assert_eq!(len(), 1);
        POOL.trim();
        assert_eq!(len(), 0, "an idle pool ends empty");
        assert_eq!(POOL.take().buf.len(), 8, "and still hands out buffers");
    }
}
