//! Time, as the engine sees it: a monotonic clock that drives every timer
//! while the daemon runs, and the wall clock that only stamps times and
//! measures how long the daemon was down. Tests drive a [`ManualClock`].

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The engine's source of time.
pub trait Clock: Send + Sync {
    /// Time since an arbitrary origin; never jumps, never goes back.
    fn monotonic(&self) -> Duration;
    /// The wall clock, which an administrator may change at any time.
    fn wall(&self) -> SystemTime;
}

/// The real clocks.
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock a test moves by hand: `advance` moves both clocks, `set_wall`
/// changes the wall clock alone (as an administrator would).
pub struct ManualClock {
    state: Mutex<(Duration, SystemTime)>,
}

impl ManualClock {
    pub fn new(wall: SystemTime) -> ManualClock {
        ManualClock {
            state: Mutex::new((Duration::ZERO, wall)),
        }
    }

    pub fn advance(&self, by: Duration) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 += by;
        state.1 += by;
    }

    pub fn set_wall(&self, wall: SystemTime) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = wall;
    }
}

impl Clock for ManualClock {
    fn monotonic(&self) -> Duration {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }
    fn wall(&self) -> SystemTime {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}
