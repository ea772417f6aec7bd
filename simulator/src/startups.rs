//! Where each pod's start-up time comes from: one stream drawn in the order pods begin
//! their start-ups, or draws matched across policies by when they begin them.

use crate::random::{Stream, StreamName};

/// Width of the buckets matched start-ups are drawn by: a burst's pods begin their
/// start-ups within a few seconds of each other under any policy.
const MATCHED_BUCKET_SECONDS: f64 = 10.0;

pub enum StartupDraws {
    /// One stream: the n-th pod to begin a start-up gets its n-th draw, so a policy that
    /// started more pods before draws other start-ups for the same burst.
    InOrder(Stream),
    /// The i-th pod to begin a start-up within a bucket gets the same draw under every
    /// policy (`Settings::matched_startups`).
    /// `bucket` is the one of the last start-up begun, if any.
    Matched { seed: u64, bucket: Option<u64>, begun_in_bucket: u64 },
}

impl StartupDraws {
    pub fn new(seed: u64, matched: bool) -> Self {
        if matched {
            Self::Matched { seed, bucket: None, begun_in_bucket: 0 }
        } else {
            Self::InOrder(Stream::new(seed, StreamName::PodStartups))
        }
    }

    /// The start-up of a pod beginning one at `now` (seconds, not decreasing from one
    /// call to the next): log-normal around `median`, of shape `sigma`.
    pub fn draw(&mut self, now: f64, median: f64, sigma: f64) -> f64 {
        match self {
            Self::InOrder(stream) => stream.lognormal(median, sigma),
            Self::Matched { seed, bucket, begun_in_bucket } => {
                // Simulated time is finite and non-negative: the cast is exact enough.
                let now_bucket = (now.max(0.0) / MATCHED_BUCKET_SECONDS) as u64;
                if *bucket != Some(now_bucket) {
                    *bucket = Some(now_bucket);
                    *begun_in_bucket = 0;
                }
                *begun_in_bucket += 1;
                Stream::keyed(*seed, StreamName::PodStartups, [now_bucket, *begun_in_bucket]).lognormal(median, sigma)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(matched: bool, times: &[f64]) -> Vec<f64> {
        let mut startups = StartupDraws::new(7, matched);
        times.iter().map(|&now| startups.draw(now, 60.0, 0.3)).collect()
    }

    #[test]
    fn matched_draws_depend_on_when_a_start_up_begins_not_on_those_before() {
        // One policy starts a pod at 12 s and three for a burst at 101–104 s; another
        // starts only the three, a second or two later but in the same bucket.
        let one = draws(true, &[12.0, 101.0, 101.0, 104.0]);
        let other = draws(true, &[102.0, 103.0, 109.9]);
        assert_eq!(&one[1..], &other[..]);
        assert_ne!(one[0], one[1], "another bucket draws another start-up");
        assert_ne!(one[1], one[2], "the second pod of a bucket draws its own");
        // Drawn in order, the pod started before shifts every draw after it.
        let one = draws(false, &[12.0, 101.0, 101.0, 104.0]);
        let other = draws(false, &[102.0, 103.0, 109.9]);
        assert_ne!(&one[1..], &other[..]);
    }

    #[test]
    fn matched_draws_spread_as_drawn_ones() {
        let times: Vec<f64> = (0..2000).map(|index| f64::from(index) * 3.0).collect();
        let mut matched = draws(true, &times);
        matched.sort_by(f64::total_cmp);
        let median = matched[matched.len() / 2];
        assert!((55.0..65.0).contains(&median), "median {median}");
        let p90 = matched[matched.len() * 9 / 10];
        // exp(0.3 × 1.2816) × 60 ≈ 88 s.
        assert!((82.0..94.0).contains(&p90), "p90 {p90}");
    }
}
