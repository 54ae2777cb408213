//! The binary search for the highest rate a DUT forwards within a loss threshold (RFC 2544
//! section 26.1; NDR with a threshold of 0, PDR with 0.5% as FD.io CSIT does).
//!
//! The search keeps the highest rate known to pass and the lowest known to fail. It starts
//! at the top rate; while the interval between the two is wider than `precision` times the
//! failing rate, it tries the middle. A trial's result is recorded in every search, so the NDR
//! search starts from what the PDR search already learnt (a rate with no loss passes both; a
//! rate over 0.5% loss fails both). A search is also over when nothing passes down to the
//! floor rate, or after `max_trials` rates of its own.
//!
//! **Repeated trials.** On a machine whose cores are not isolated, a trial at a rate the DUT
//! forwards can still lose a few frames when the hypervisor or the kernel preempts the DUT or
//! the generator for a millisecond; one such trial sends a plain binary search far below the
//! DUT's rate. As FD.io CSIT's MLRsearch does (draft-ietf-bmwg-mlrsearch: a load is a lower
//! bound when the share of its trials exceeding the loss ratio is at most the goal exceed
//! ratio, 50% by default), a rate can be tried up to `repeat` times ([`Majority`]): it passes
//! when more than half of `repeat` trials pass, fails when more than half fail, and the trials
//! stop as soon as either is reached (2 of 3). `repeat = 1` is RFC 2544's single trial.

/// The state of one search.
#[derive(Debug, Clone)]
pub struct RateSearch {
    /// Loss ratio a trial may have and pass (0.0 for NDR).
    pub threshold: f64,
    top: f64,
    floor: f64,
    precision: f64,
    pass: Option<f64>,
    fail: Option<f64>,
    trials: u32,
    max_trials: u32,
}

impl RateSearch {
    /// A search between `floor` and `top` packets/s, done when the bracket is within
    /// `precision` (a ratio, 0.01 = 1%) of the failing rate, or after `max_trials` trials.
    pub fn new(threshold: f64, top: f64, floor: f64, precision: f64, max_trials: u32) -> Self {
        RateSearch {
            threshold,
            top,
            floor: floor.min(top),
            precision,
            pass: None,
            fail: None,
            trials: 0,
            max_trials,
        }
    }

    /// Whether a trial with this loss ratio passes.
    pub fn passes(&self, loss_ratio: f64) -> bool {
        loss_ratio <= self.threshold
    }

    /// The next rate to try, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        if self.trials >= self.max_trials {
            return None;
        }
        match (self.pass, self.fail) {
            (None, None) => Some(self.top),
            (Some(_), None) => None, // the top rate passed
            (pass, Some(fail)) => {
                let lo = pass.unwrap_or(self.floor);
                if pass.is_none() && fail <= self.floor {
                    return None; // even the floor fails
                }
                if fail - lo <= self.precision * fail {
                    if pass.is_none() {
                        // the bracket is narrow but the floor itself is untested
                        return Some(self.floor);
                    }
                    return None;
                }
                Some((lo + fail) / 2.0)
            }
        }
    }

    /// Records a trial at `rate` (the rate asked for) with `loss_ratio`; `own` says whether
    /// the trial was this search's own (counted against `max_trials`).
    pub fn record(&mut self, rate: f64, loss_ratio: f64, own: bool) {
        self.record_verdict(rate, self.passes(loss_ratio), own);
    }

    /// Records the verdict on `rate` (the rate asked for) of one or more trials ([`Majority`]).
    pub fn record_verdict(&mut self, rate: f64, passed: bool, own: bool) {
        if own {
            self.trials += 1;
        }
        if passed {
            if !self.fail.is_some_and(|f| rate >= f) {
                self.pass = Some(self.pass.map_or(rate, |p| p.max(rate)));
            }
        } else if !self.pass.is_some_and(|p| rate <= p) {
            self.fail = Some(self.fail.map_or(rate, |f| f.min(rate)));
        }
    }

    /// The highest rate that passed, if any.
    pub fn result(&self) -> Option<f64> {
        self.pass
    }

    /// The lowest rate that failed, if any.
    pub fn lowest_failure(&self) -> Option<f64> {
        self.fail
    }

    /// Rates this search tried itself.
    pub fn trials(&self) -> u32 {
        self.trials
    }
}

/// The verdict on one rate from up to `repeat` trials: more than half of `repeat` must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Majority {
    pub repeat: u32,
}

impl Majority {
    /// `repeat` trials at most per rate (at least 1).
    pub fn new(repeat: u32) -> Majority {
        Majority {
            repeat: repeat.max(1),
        }
    }

    /// Pass (`Some(true)`) or fail (`Some(false)`) once more than half of `repeat` trials
    /// agree against `threshold`, `None` while undecided.
    pub fn verdict(&self, losses: &[f64], threshold: f64) -> Option<bool> {
        let need = self.repeat / 2 + 1;
        let passed = losses.iter().filter(|l| **l <= threshold).count() as u32;
        let failed = losses.len() as u32 - passed;
        if passed >= need {
            Some(true)
        } else if failed >= need {
            Some(false)
        } else {
            None
        }
    }
}
