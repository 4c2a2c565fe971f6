//! Spike encodings of static images, on the CPU: rate (Bernoulli) and direct encoding, grey
//! to RGB expansion and `u8` normalisation.
//!
//! Images are flat `f32` slices (`[C, H, W]` row-major, though only the pixel count
//! matters); encoded sequences are time-major, `[T, P]` for one image and `[T, B, P]` for a
//! batch, as the runtime's layers take them.
//!
//! # Rate encoding and its random numbers
//!
//! Pixel `j` of dataset sample `s` spikes at step `t` iff `u(seed, s, t, j) < v`, where `v`
//! in `[0, 1]` is the pixel's intensity and `u` is a uniform number in `[0, 1)` that is a
//! pure function of its arguments: no state, so the spikes do not depend on batching,
//! shuffling, threading or the device. `u` comes from **Philox-4x32-10** (Salmon et al.,
//! "Parallel random numbers: as easy as 1, 2, 3", SC'11; the generator cuRAND and
//! Random123 provide, checked here against Random123's known-answer vectors), one call
//! giving the numbers of four adjacent pixels:
//!
//! ```text
//! counter = [j / 4, t, s & 0xffff_ffff, s >> 32]      (u32 words)
//! key     = [seed & 0xffff_ffff, seed >> 32]
//! r       = philox4x32_10(counter, key)[j % 4]
//! u       = (r >> 8) as f32 * 2^-24                    (exact: 24 bits fit an f32)
//! spike   = u < v                                      (v = 0 never, v = 1 always spikes)
//! ```
//!
//! A GPU kernel computing the same four lines gives bit-identical spikes. The spike
//! probability is `ceil(v * 2^24) / 2^24`, within `2^-24` of `v`. The mapping does not
//! involve the image size or `T`, so a pixel's spikes at step `t` are the same whatever
//! `T` is. Limits: `j < 2^34` pixels per image, `t < 2^32` steps.

use std::fmt;

/// What went wrong encoding images.
#[derive(Clone, Debug, PartialEq)]
pub enum EncodeError {
    /// `T == 0`.
    ZeroSteps,
    /// A rate-encoded intensity outside `[0, 1]`, or NaN.
    OutOfRange { index: usize, value: f32 },
    /// Lengths that do not fit the stated image size or batch.
    Shape(String),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::ZeroSteps => write!(f, "the number of time steps T must be at least 1"),
            EncodeError::OutOfRange { index, value } => write!(
                f,
                "pixel {index} has intensity {value}: rate encoding needs values in [0, 1]"
            ),
            EncodeError::Shape(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for EncodeError {}

// Philox-4x32's round multipliers and key increments (Weyl constants). Public so that the
// GPU encoder's test (snn-runtime) checks its kernel's copies against them.
pub const PHILOX_M0: u32 = 0xd251_1f53;
pub const PHILOX_M1: u32 = 0xcd9e_8d57;
pub const PHILOX_W0: u32 = 0x9e37_79b9;
pub const PHILOX_W1: u32 = 0xbb67_ae85;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = u64::from(a) * u64::from(b);
    ((p >> 32) as u32, p as u32)
}

/// Philox-4x32 with 10 rounds: four random `u32` that are a pure function of a 128-bit
/// counter and a 64-bit key.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W0);
            k[1] = k[1].wrapping_add(PHILOX_W1);
        }
        let (hi0, lo0) = mulhilo(PHILOX_M0, c[0]);
        let (hi1, lo1) = mulhilo(PHILOX_M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The four random words for pixels `4g..4g + 4` of sample `sample` at step `step`.
#[inline]
fn block(seed: u64, sample: u64, step: u32, group: u32) -> [u32; 4] {
    philox4x32_10(
        [group, step, sample as u32, (sample >> 32) as u32],
        [seed as u32, (seed >> 32) as u32],
    )
}

/// `r` as a uniform `f32` in `[0, 1)`: its top 24 bits times `2^-24`.
#[inline(always)]
fn to_unit(r: u32) -> f32 {
    (r >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// The random word of pixel `pixel` of sample `sample` at step `step` (module docs).
/// Pixels are counted modulo 2^34 (the encoders refuse larger images).
pub fn random_u32(seed: u64, sample: u64, step: u32, pixel: u64) -> u32 {
    block(seed, sample, step, (pixel >> 2) as u32)[(pixel & 3) as usize]
}

/// The uniform number in `[0, 1)` of pixel `pixel` of sample `sample` at step `step`.
pub fn uniform(seed: u64, sample: u64, step: u32, pixel: u64) -> f32 {
    to_unit(random_u32(seed, sample, step, pixel))
}

/// Whether pixel `pixel` of sample `sample`, of intensity `intensity`, spikes at `step`:
/// the single-element form of [`rate_encode`].
pub fn rate_spike(seed: u64, sample: u64, step: u32, pixel: u64, intensity: f32) -> bool {
    uniform(seed, sample, step, pixel) < intensity
}

fn check_unit(values: &[f32]) -> Result<(), EncodeError> {
    match values.iter().position(|v| !(0.0..=1.0).contains(v)) {
        Some(index) => Err(EncodeError::OutOfRange {
            index,
            value: values[index],
        }),
        None => Ok(()),
    }
}

fn check_steps(steps: usize, pixels: usize) -> Result<(), EncodeError> {
    if steps == 0 {
        return Err(EncodeError::ZeroSteps);
    }
    if u32::try_from(steps).is_err() {
        return Err(EncodeError::Shape(format!(
            "{steps} steps: rate encoding supports fewer than 2^32"
        )));
    }
    if (pixels as u64) >> 34 != 0 {
        return Err(EncodeError::Shape(format!(
            "{pixels} pixels: rate encoding supports fewer than 2^34 per image"
        )));
    }
    Ok(())
}

/// Step `step` of one image's rate encoding, written to `spikes` (`image.len()` values).
#[inline]
fn encode_step(image: &[f32], seed: u64, sample: u64, step: u32, spikes: &mut [f32]) {
    for (g, (pixels, out)) in image.chunks(4).zip(spikes.chunks_mut(4)).enumerate() {
        let r = block(seed, sample, step, g as u32);
        for ((v, s), r) in pixels.iter().zip(out.iter_mut()).zip(r) {
            *s = if to_unit(r) < *v { 1.0 } else { 0.0 };
        }
    }
}

/// Rate (Bernoulli) encoding of one image with intensities in `[0, 1]` into `steps` spike
/// frames, `[T, P]` of exact 0.0 and 1.0. `sample` is the image's index in its dataset
/// (not its position in a batch), so the spikes are the same however the data are batched.
pub fn rate_encode(
    image: &[f32],
    steps: usize,
    seed: u64,
    sample: u64,
) -> Result<Vec<f32>, EncodeError> {
    check_steps(steps, image.len())?;
    check_unit(image)?;
    let len = steps
        .checked_mul(image.len())
        .ok_or_else(|| EncodeError::Shape(format!("{steps} x {} is too large", image.len())))?;
    let mut out = vec![0.0; len];
    if !image.is_empty() {
        for (t, row) in out.chunks_exact_mut(image.len()).enumerate() {
            encode_step(image, seed, sample, t as u32, row);
        }
    }
    Ok(out)
}

/// Rate encoding of a batch: `images` is `[B, P]` with `P = pixels`, `samples[b]` the
/// dataset index of image `b`; the result is time-major `[T, B, P]`, and its `[t, b]` row
/// equals row `t` of `rate_encode(image b, steps, seed, samples[b])`.
pub fn rate_encode_batch(
    images: &[f32],
    pixels: usize,
    samples: &[u64],
    steps: usize,
    seed: u64,
) -> Result<Vec<f32>, EncodeError> {
    check_steps(steps, pixels)?;
    if pixels.checked_mul(samples.len()) != Some(images.len()) {
        return Err(EncodeError::Shape(format!(
            "{} values are not {} images of {pixels} pixels",
            images.len(),
            samples.len()
        )));
    }
    check_unit(images)?;
    let batch = images.len();
    let len = steps
        .checked_mul(batch)
        .ok_or_else(|| EncodeError::Shape(format!("{steps} x {batch} is too large")))?;
    let mut out = vec![0.0; len];
    if pixels == 0 {
        return Ok(out);
    }
    for (t, row) in out.chunks_exact_mut(batch).enumerate() {
        for ((image, spikes), &sample) in images
            .chunks_exact(pixels)
            .zip(row.chunks_exact_mut(pixels))
            .zip(samples)
        {
            encode_step(image, seed, sample, t as u32, spikes);
        }
    }
    Ok(out)
}

/// Direct encoding: the analog input repeated `steps` times, `[T, ...]`. For a batch
/// `[B, P]` this is `[T, B, P]`.
pub fn direct_encode(images: &[f32], steps: usize) -> Result<Vec<f32>, EncodeError> {
    if steps == 0 {
        return Err(EncodeError::ZeroSteps);
    }
    let len = steps
        .checked_mul(images.len())
        .ok_or_else(|| EncodeError::Shape(format!("{steps} x {} is too large", images.len())))?;
    let mut out = Vec::with_capacity(len);
    for _ in 0..steps {
        out.extend_from_slice(images);
    }
    Ok(out)
}

/// Grey images `[B, 1, H, W]` (`plane = H * W`) expanded to three identical channels,
/// `[B, 3, H, W]`, for a stem that expects RGB.
pub fn grey_to_rgb(images: &[f32], plane: usize) -> Result<Vec<f32>, EncodeError> {
    if plane == 0 || !images.len().is_multiple_of(plane) {
        return Err(EncodeError::Shape(format!(
            "{} values are not a whole number of {plane}-pixel grey images",
            images.len()
        )));
    }
    let mut out = Vec::with_capacity(3 * images.len());
    for image in images.chunks_exact(plane) {
        for _ in 0..3 {
            out.extend_from_slice(image);
        }
    }
    Ok(out)
}

/// `u8` pixels normalised to `[0, 1]`: `v / 255` (0 gives exactly 0.0, 255 exactly 1.0).
pub fn u8_to_unit(pixels: &[u8]) -> Vec<f32> {
    pixels.iter().map(|&v| f32::from(v) / 255.0).collect()
}
