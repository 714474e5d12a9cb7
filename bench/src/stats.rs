//! Delivery statistics shared by every subscriber of one process: a latency
//! histogram (HdrHistogram, microseconds), delivery, gap and duplicate counts,
//! and each subscriber's last sequence number.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

use crate::payload::now_nanos;

/// Counters for the current measurement window.
#[derive(Debug)]
pub struct Stats {
    histogram: Mutex<Histogram<u64>>,
    /// Messages received in the window.
    pub deliveries: AtomicU64,
    /// Messages skipped (sequence jumped forward) in the window.
    pub gaps: AtomicU64,
    /// Messages received twice or out of order in the window.
    pub dups: AtomicU64,
    /// Messages received since the start (never reset; for the progress line).
    pub total: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

/// A finished window.
#[derive(Debug, Clone)]
pub struct Window {
    /// The latency histogram (µs).
    pub histogram: Histogram<u64>,
    /// Deliveries.
    pub deliveries: u64,
    /// Gaps.
    pub gaps: u64,
    /// Duplicates.
    pub dups: u64,
}

impl Stats {
    /// Empty statistics; latencies from 1 µs to 10 minutes, 3 digits.
    pub fn new() -> Self {
        Self {
            histogram: Mutex::new(
                Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"),
            ),
            deliveries: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            dups: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    /// Records the messages `(seq, sent_nanos)` one subscriber found in one
    /// chunk, checking them against its last sequence number.
    pub fn record(&self, last_seq: &AtomicU64, found: &[(u64, u64)]) {
        if found.is_empty() {
            return;
        }
        let now = now_nanos();
        let (mut gaps, mut dups) = (0, 0);
        let mut last = last_seq.load(Ordering::Relaxed);
        for &(seq, _) in found {
            if seq > last {
                gaps += seq - last - 1;
                last = seq;
            } else {
                dups += 1;
            }
        }
        last_seq.store(last, Ordering::Relaxed);
        {
            let mut h = self.histogram.lock().unwrap_or_else(|e| e.into_inner());
            for &(_, sent) in found {
                h.saturating_record(now.saturating_sub(sent) / 1000);
            }
        }
        let n = found.len() as u64;
        self.deliveries.fetch_add(n, Ordering::Relaxed);
        self.total.fetch_add(n, Ordering::Relaxed);
        if gaps > 0 {
            self.gaps.fetch_add(gaps, Ordering::Relaxed);
        }
        if dups > 0 {
            self.dups.fetch_add(dups, Ordering::Relaxed);
        }
    }

    /// Ends the current window and starts a new one.
    pub fn take(&self) -> Window {
        let histogram = {
            let mut h = self.histogram.lock().unwrap_or_else(|e| e.into_inner());
            let out = h.clone();
            h.reset();
            out
        };
        Window {
            histogram,
            deliveries: self.deliveries.swap(0, Ordering::Relaxed),
            gaps: self.gaps.swap(0, Ordering::Relaxed),
            dups: self.dups.swap(0, Ordering::Relaxed),
        }
    }
}
