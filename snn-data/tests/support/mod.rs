//! Synthetic data in the datasets' real formats, shared by snn-data's tests and (through
//! `#[path]`) the root crate's data benchmarks: seeded random event streams, N-MNIST
//! records, AEDAT 3.1 packets and IDX files; and the benchmarks' best-of timer.
#![allow(dead_code)]

pub mod files;

use std::time::{Duration, Instant};

use rand_xoshiro::SplitMix64;
use rand_xoshiro::rand_core::{Rng as _, SeedableRng};
use snn_data::Event;

/// Seeded draws for synthetic data: SplitMix64 from `rand_xoshiro`.
#[derive(Clone, Debug)]
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(SplitMix64::seed_from_u64(seed))
    }

    /// A number in `0..n` (`n > 0`; the modulo's bias does not matter for test data).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n
    }
}

/// `n` events on a `width x height` sensor, timestamps in `t0..t0 + span` sorted.
pub fn random_events(
    rng: &mut Rng,
    n: usize,
    (width, height): (u16, u16),
    t0: u64,
    span: u64,
) -> Vec<Event> {
    let mut ts: Vec<u64> = (0..n).map(|_| t0 + rng.below(span)).collect();
    ts.sort_unstable();
    ts.into_iter()
        .map(|t| Event {
            t,
            x: rng.below(width.into()) as u16,
            y: rng.below(height.into()) as u16,
            p: rng.below(2) == 1,
        })
        .collect()
}

/// N-MNIST records `(x, y, p, t)`: x, y, polarity in bit 7 of byte 2 and the 23-bit
/// timestamp in the remaining 23 bits.
pub fn nmnist_bytes(events: &[(u8, u8, bool, u32)]) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 * events.len());
    for &(x, y, p, t) in events {
        assert!(t < 1 << 23, "N-MNIST timestamps have 23 bits");
        f.extend_from_slice(&[
            x,
            y,
            (u8::from(p) << 7) | (t >> 16) as u8,
            (t >> 8) as u8,
            t as u8,
        ]);
    }
    f
}

/// The N-MNIST records of events on its 34x34 sensor within 2^23 us.
pub fn nmnist_file(events: &[Event]) -> Vec<u8> {
    let records: Vec<_> = events
        .iter()
        .map(|e| (e.x as u8, e.y as u8, e.p, e.t as u32))
        .collect();
    nmnist_bytes(&records)
}

/// The shortest AEDAT 3.1 header DVS128 Gesture's files could have.
pub const AEDAT_HEADER: &str =
    "#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n";

/// One AEDAT 3.1 packet: the 28-byte header, then `events` of `size` bytes each.
pub fn aedat_packet(kind: u16, size: u32, overflow: u32, events: &[impl AsRef<[u8]>]) -> Vec<u8> {
    let n = events.len() as u32;
    let mut f = Vec::new();
    f.extend_from_slice(&kind.to_le_bytes());
    f.extend_from_slice(&1u16.to_le_bytes()); // eventSource
    f.extend_from_slice(&size.to_le_bytes());
    f.extend_from_slice(&4u32.to_le_bytes()); // eventTSOffset
    f.extend_from_slice(&overflow.to_le_bytes());
    f.extend_from_slice(&n.to_le_bytes()); // eventCapacity
    f.extend_from_slice(&n.to_le_bytes()); // eventNumber
    f.extend_from_slice(&n.to_le_bytes()); // eventValid
    for e in events {
        assert_eq!(e.as_ref().len(), size as usize);
        f.extend_from_slice(e.as_ref());
    }
    f
}

/// One polarity event of an AEDAT 3.1 packet (type 1, 8 bytes).
pub fn aedat_polarity(x: u16, y: u16, p: bool, t: u32, valid: bool) -> [u8; 8] {
    let word = (u32::from(x) << 17) | (u32::from(y) << 2) | (u32::from(p) << 1) | u32::from(valid);
    let mut e = [0; 8];
    e[..4].copy_from_slice(&word.to_le_bytes());
    e[4..].copy_from_slice(&t.to_le_bytes());
    e
}

/// A recording of `events` (timestamps below 2^32 us) in packets of `per_packet`.
pub fn aedat(events: &[Event], per_packet: usize) -> Vec<u8> {
    let mut f = AEDAT_HEADER.as_bytes().to_vec();
    for chunk in events.chunks(per_packet) {
        let encoded: Vec<[u8; 8]> = chunk
            .iter()
            .map(|e| aedat_polarity(e.x, e.y, e.p, e.t as u32, true))
            .collect();
        f.extend(aedat_packet(1, 8, 0, &encoded));
    }
    f
}

/// An IDX file of unsigned bytes with dimensions `dims`.
pub fn idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 0, 8, dims.len() as u8];
    for &d in dims {
        f.extend_from_slice(&(d as u32).to_be_bytes());
    }
    f.extend_from_slice(data);
    f
}

/// Runs `f` repeatedly for about `budget` after a warm-up call; the best time of one call.
pub fn best_of(budget: Duration, mut f: impl FnMut()) -> Duration {
    f();
    let start = Instant::now();
    let mut best = Duration::MAX;
    while start.elapsed() < budget {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
    }
    best
}
