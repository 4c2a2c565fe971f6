//! Rate (Bernoulli) encoding on the GPU: the same Philox-4x32-10 counter-based draws as
//! the CPU encoder in [`snn_data::encode`], so a run is reproducible whichever side encodes
//! and encoding costs no host time. The kernel is `kernels/encode.cu`.
//!
//! Pixel `j` of sample `s` spikes at step `t` when `u < v`, where `v` is its intensity and
//! `u = (r >> 8) * 2^-24` for `r` = word `j % 4` of `philox(counter = [j / 4, t, s_lo, s_hi],
//! key = [seed_lo, seed_hi])`.
#![allow(unsafe_code)]

use std::sync::Arc;

use snn_codegen::Dtype;

use crate::check;
use crate::device::Device;
use crate::error::RuntimeError;
use crate::launch::{self, programs};
use crate::tensor::DeviceTensor;

/// Encodes `intensity` (`[B, P]` f32 on the device, values in [0, 1]) into `[T, B, P]`
/// f32 spikes; `samples[b]` is the dataset index of image `b`.
pub fn rate_encode(
    device: &Arc<Device>,
    intensity: &DeviceTensor,
    samples: &[u64],
    steps: usize,
    seed: u64,
) -> Result<DeviceTensor, RuntimeError> {
    const OP: &str = "rate encoding";
    let &[batch, pixels] = &intensity.shape[..] else {
        return Err(RuntimeError::Tensor {
            op: OP.into(),
            arg: "intensity".into(),
            expected: "an f32 tensor of shape [B, P]".into(),
            got: format!("{} of shape {:?}", intensity.dtype, intensity.shape),
        });
    };
    check::f32_tensor(OP, "intensity", intensity, batch * pixels, "[B, P]")?;
    if samples.len() != batch {
        return Err(RuntimeError::invalid(
            OP,
            format!(
                "{} sample indices for {batch} images: give one per image",
                samples.len()
            ),
        ));
    }
    if pixels >> 34 != 0 {
        return Err(RuntimeError::invalid(
            OP,
            format!("{pixels} pixels per image: rate encoding supports fewer than 2^34"),
        ));
    }
    let total = check::product(OP, &[steps, batch, pixels], "the spikes")?;
    let out = DeviceTensor::empty(device, Dtype::F32, &[steps, batch, pixels])?;
    if total == 0 {
        return Ok(out);
    }
    let ids = DeviceTensor::empty(device, Dtype::U64, &[batch])?;
    // SAFETY: `ids` holds `batch` u64 values, as many as `samples`; the copy is ordered on
    // the device's stream before the kernel that reads it, and the driver has read the
    // pageable `samples` before the call returns.
    unsafe {
        cudarc::driver::result::memcpy_htod_async(ids.ptr(), samples, device.stream.cu_stream())
    }
    .map_err(|e| RuntimeError::driver("uploading sample indices", e))?;
    device
        .kernel(&programs::ENCODE, "snn_rate_encode")?
        .arg("intensity", intensity)
        .arg("samples", &ids)
        .arg("out", &out)
        .arg("steps", check::to_i64(OP, "T", steps)?)
        .arg("batch", check::to_i64(OP, "B", batch)?)
        .arg("pixels", check::to_i64(OP, "P", pixels)?)
        .arg("seed", seed)
        .run(launch::grid_stride(device, total, 256, 32))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's Philox constants (its `#define SNN_PHILOX_*` lines) are the CPU
    /// encoder's, and the kernel writes them nowhere else: the two encoders draw the same
    /// numbers.
    #[test]
    fn the_kernel_uses_the_cpu_encoders_philox_constants() {
        use snn_data::encode::{PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1};
        let source = programs::ENCODE.source;
        let defined = |name: &str| -> Option<u32> {
            let line = source
                .lines()
                .find(|l| l.starts_with(&format!("#define {name} ")))?;
            let hex = line.split_whitespace().nth(2)?;
            u32::from_str_radix(hex.strip_prefix("0x")?.strip_suffix('u')?, 16).ok()
        };
        for (name, cpu) in [
            ("SNN_PHILOX_M0", PHILOX_M0),
            ("SNN_PHILOX_M1", PHILOX_M1),
            ("SNN_PHILOX_W0", PHILOX_W0),
            ("SNN_PHILOX_W1", PHILOX_W1),
        ] {
            assert_eq!(defined(name), Some(cpu), "{name}");
            let hex = format!("{cpu:#010x}u");
            assert_eq!(source.matches(&hex).count(), 1, "{hex} outside its #define");
        }
    }
}
