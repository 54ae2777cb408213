//! Rate pacing against the TSC: how many frames are due by a given time.
//!
//! The pacer releases frames so that, at any instant `t` after the start,
//! `floor((t - start) * rate / hz)` frames have been released in all, never sending ahead of
//! the schedule. When
//! the sender falls behind (it could not build or send frames fast enough), at most
//! `max_backlog` frames are released at once and the rest of the debt is written off and
//! counted in [`Pacer::missed`]: a late generator does not burst to catch up, and the rate it
//! actually offered, not the one asked for, is what a trial reports.

/// Frames due for a rate, by TSC cycles elapsed since the start.
#[inline]
pub fn frames_due(elapsed_cycles: u64, rate_pps: u64, hz: u64) -> u64 {
    if hz == 0 {
        return 0;
    }
    (u128::from(elapsed_cycles) * u128::from(rate_pps) / u128::from(hz)) as u64
}

/// Releases frames at a set rate.
#[derive(Debug, Clone)]
pub struct Pacer {
    start: u64,
    rate_pps: u64,
    hz: u64,
    released: u64,
    missed: u64,
    max_backlog: u64,
}

impl Pacer {
    /// A pacer starting at TSC `start`, releasing `rate_pps` frames per second with a TSC of
    /// `hz`; `rate_pps == 0` means as fast as the sender can go. At most `max_backlog` frames
    /// are released at once after falling behind.
    pub fn new(start: u64, rate_pps: u64, hz: u64, max_backlog: u64) -> Self {
        Pacer {
            start,
            rate_pps,
            hz,
            released: 0,
            missed: 0,
            max_backlog: max_backlog.max(1),
        }
    }

    /// How many frames (at most `max`) may be sent at TSC `now`; they count as released.
    #[inline]
    pub fn take(&mut self, now: u64, max: u64) -> u64 {
        if self.rate_pps == 0 {
            self.released += max;
            return max;
        }
        let due = frames_due(now.saturating_sub(self.start), self.rate_pps, self.hz);
        let mut owed = due.saturating_sub(self.released + self.missed);
        if owed > self.max_backlog {
            self.missed += owed - self.max_backlog;
            owed = self.max_backlog;
        }
        let n = owed.min(max);
        self.released += n;
        n
    }

    /// Frames released so far.
    pub fn released(&self) -> u64 {
        self.released
    }

    /// Frames the schedule had due but the sender was too late to send (written off).
    pub fn missed(&self) -> u64 {
        self.missed
    }
}
