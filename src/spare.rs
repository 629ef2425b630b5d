//! Bounded pools of spare byte buffers, so that a buffer a connection stops using is reused by
//! the next one instead of freed and allocated (and zeroed) again.
//!
//! Buffers are only held while they are in use: an idle connection or tunnel gives its buffer
//! back. Reuse also keeps the heap from filling with holes that long-lived tunnel state gets
//! scattered into (measured: per-idle-tunnel memory depends on it).

use std::sync::Mutex;

/// A pool of buffers of one size.
pub struct Spares {
    /// Length of every buffer handed out.
    size: usize,
    /// Most buffers kept.
    max: usize,
    list: Mutex<Vec<Vec<u8>>>,
}

impl Spares {
    /// An empty pool of `size`-byte buffers keeping at most `max` of them.
    pub const fn new(size: usize, max: usize) -> Spares {
        Spares {
            size,
            max,
            list: Mutex::new(Vec::new()),
        }
    }

    /// A buffer of the pool's size, spare or new; it goes back to the pool when dropped.
    pub fn take(&'static self) -> Lease {
        let spare = self.list.lock().ok().and_then(|mut list| list.pop());
        Lease {
            buf: spare.unwrap_or_else(|| vec![0; self.size]),
            home: self,
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
        if let Ok(mut list) = self.home.list.lock() {
            if list.len() < self.home.max {
                list.push(std::mem::take(&mut self.buf));
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
        assert_eq!(POOL.list.lock().unwrap().len(), 2, "at most `max` kept");
        let again = [POOL.take(), POOL.take()];
        assert!(
            again.iter().any(|l| l.buf.as_ptr() == marked),
            "a kept buffer comes back"
        );
        drop(again);
        let mut grown = POOL.take();
        grown.buf.resize(16, 0);
        let before = POOL.list.lock().unwrap().len();
        drop(grown);
        assert_eq!(
            POOL.list.lock().unwrap().len(),
            before,
            "a grown buffer is freed"
        );
    }
}
