//! The [`Clock`]: logic takes the time as an input, and whoever calls it asks a clock.
//!
//! Production uses the wall clock ([`SystemClock`]); [`ManualClock`] reads what a test set. [`TokioClock`] follows tokio's clock, so a
//! test that pauses tokio's time (`start_paused`) moves the workflow's time with it: a 15-minute
//! approval timeout passes in no time at all, and exactly when the test says.

use crate::domain::Timestamp;

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// The wall-clock time when it was made, advanced by tokio's clock since (which a test may
/// pause and advance).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: Timestamp,
    origin: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> TokioClock {
        TokioClock::starting_at(Timestamp::now())
    }

    /// A clock that reads `start` now.
    pub fn starting_at(start: Timestamp) -> TokioClock {
        TokioClock {
            start,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.start.plus(self.origin.elapsed())
    }
}

/// A clock that reads what it was last set to: for tests that need an exact time (a signature
/// window's edge), and for nothing that must make progress.
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<Timestamp>);

impl ManualClock {
    pub fn at(t: Timestamp) -> ManualClock {
        ManualClock(std::sync::Mutex::new(t))
    }

    pub fn set(&self, t: Timestamp) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_moves_with_paused_time() {
        let clock = TokioClock::starting_at(Timestamp::from_millis(1_000));
        assert_eq!(clock.now(), Timestamp::from_millis(1_000));
        tokio::time::sleep(Duration::from_secs(900)).await;
        assert_eq!(clock.now(), Timestamp::from_millis(901_000));
    }
}
