//! Seeded randomness: the same seed gives the same run on every machine.

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

/// One independent stream of random numbers.
///
/// Each source of randomness (arrivals, service times, start-ups, routing) has its own
/// stream, so that one policy starting more pods than another does not shift the
/// service times or the routing the other sees.
pub struct Stream(Pcg64Mcg);

/// The streams, named so that no two uses share one by accident.
#[derive(Clone, Copy)]
pub enum StreamName {
    Arrivals = 1,
    ServiceTimes = 2,
    PodStartups = 3,
    NodeProvisioning = 4,
    Routing = 5,
    ScrapeOffsets = 6,
    /// The start-ups of the fleet running when a trace begins.
    InitialStartups = 7,
}

impl Stream {
    pub fn new(seed: u64, name: StreamName) -> Self {
        Self(Pcg64Mcg::seed_from_u64(source_seed(seed, name)))
    }

    /// The stream of one item of a source (`key`: a pod's start-up, say), independent
    /// of the order in which items are drawn.
    pub fn keyed(seed: u64, name: StreamName, key: [u64; 2]) -> Self {
        let mixed = key.iter().fold(source_seed(seed, name), |state, part| splitmix(state ^ splitmix(*part)));
        Self(Pcg64Mcg::seed_from_u64(mixed))
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0.random::<f64>()
    }

    pub fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.uniform()
    }

    /// An index in `0..len`; `len` must not be zero.
    pub fn index(&mut self, len: usize) -> usize {
        self.0.random_range(0..len)
    }

    pub fn exponential(&mut self, mean: f64) -> f64 {
        // 1 - u is in (0, 1], so the logarithm is finite.
        -mean * (1.0 - self.uniform()).ln()
    }

    /// Log-normal with the given median and shape (the standard deviation of its log).
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.standard_normal()).exp()
    }

    /// Pareto with the given minimum and tail index: heavy-tailed sizes (the smaller
    /// the index, the heavier the tail).
    pub fn pareto(&mut self, minimum: f64, tail_index: f64) -> f64 {
        // 1 - u is in (0, 1]: the draw is finite and at least the minimum.
        minimum / (1.0 - self.uniform()).powf(1.0 / tail_index)
    }

    /// Box–Muller: two uniforms make one normal.
    fn standard_normal(&mut self) -> f64 {
        let radius = (-2.0 * (1.0 - self.uniform()).ln()).sqrt();
        radius * (std::f64::consts::TAU * self.uniform()).cos()
    }
}

/// The seed of a source's stream: the stream number spread over all bits, so that
/// nearby seeds do not correlate.
fn source_seed(seed: u64, name: StreamName) -> u64 {
    seed ^ (name as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// SplitMix64's finalizer: every input bit moves every output bit, so that nearby keys
/// seed unrelated streams.
fn splitmix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
