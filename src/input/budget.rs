//! One memory budget for every frame in flight in the process, so that the limit holds for
//! the process and not per frame: under `--jobs N` up to 3N + 1 frames are decoded, queued or
//! scored at once, and ten 16k × 16k frames at 512 MiB each would be gigabytes.
//!
//! A frame leases its estimated peak memory (decoded pixels and the copies preprocessing makes
//! of them) before it is decoded or read, and gives it back when it is dropped. (An image
//! file's own bytes, at most 64 MiB, are read before its header is; files are read one at a
//! time, by the reader.) The reader
//! waits while the budget is spent, which holds the stream back as a slow consumer does; a
//! frame that alone needs more than the whole budget is rejected unread. The budget is taken
//! only by frames: a frame is always leased before it is queued, so the oldest frame in flight
//! already holds its lease and the wait always ends.

use std::sync::{Condvar, Mutex};

/// Bytes all frames in flight may hold together.
pub const FRAME_MEMORY: u64 = 512 << 20;

/// Peak bytes per decoded byte: the decoder's own buffers (a progressive JPEG keeps 2-byte
/// coefficients per sample beside its output), the frame, and the 8-bit gray or RGB copy the
/// preprocessor resizes from. Measured peaks are in docs/RELIABILITY.md (row 62).
pub const PEAK_PER_DECODED_BYTE: u64 = 4;

/// Peak bytes per raw stdin byte: the frame read, its converted copy, and the copy passed on.
pub const PEAK_PER_RAW_BYTE: u64 = 3;

/// A share of [`FRAME_MEMORY`]; see the module documentation.
pub struct Budget {
    total: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

/// The process's budget.
pub static FRAMES: Budget = Budget::new(FRAME_MEMORY);

impl Budget {
    /// A budget of `total` bytes.
    pub const fn new(total: u64) -> Budget {
        Budget {
            total,
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Bytes the budget holds in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Waits until `bytes` are free and takes them; `None`, at once, when `bytes` is more than
    /// the whole budget.
    pub fn lease(&'static self, bytes: u64) -> Option<Lease> {
        if bytes > self.total {
            return None;
        }
        // A poisoned lock only means a thread panicked while counting: the count is still whole.
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used + bytes > self.total {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += bytes;
        Some(Lease {
            bytes,
            budget: Some(self),
        })
    }

    /// Bytes leased now.
    pub fn used(&self) -> u64 {
        *self.used.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Bytes taken from a [`Budget`], given back when dropped.
#[derive(Default)]
pub struct Lease {
    bytes: u64,
    budget: Option<&'static Budget>,
}

impl Lease {
    /// A lease of nothing (frames made in memory, outside any reader).
    pub fn none() -> Lease {
        Lease::default()
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({} bytes)", self.bytes)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(budget) = self.budget {
            let mut used = budget.used.lock().unwrap_or_else(|e| e.into_inner());
            *used -= self.bytes;
            budget.freed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_wait_for_each_other_and_too_much_is_refused_at_once() {
        static B: Budget = Budget::new(100);
        assert!(B.lease(101).is_none());
        let a = B.lease(60).unwrap();
        assert_eq!(B.used(), 60);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let b = B.lease(50).unwrap();
            tx.send(B.used()).unwrap();
            drop(b);
        });
        // The second lease cannot be had while the first is held.
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(a);
        assert_eq!(rx.recv().unwrap(), 50);
        waiter.join().unwrap();
        assert_eq!(B.used(), 0);
    }
}
