//! Rate encoding on the GPU equals the CPU encoder bit for bit (same Philox draws).
#![allow(clippy::unwrap_used)]

mod gpu_common;

use snn_codegen::Dtype;
use snn_data::encode::rate_encode_batch;
use snn_runtime::{DeviceTensor, encode};

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_rate_encoding_equals_the_cpu_encoder() {
    let dev = gpu_common::device();
    // 5 images of 3 x 7 x 9 pixels (not a multiple of 4), sample indices beyond 2^32.
    let (batch, pixels, steps, seed) = (5usize, 189usize, 13usize, 0x1234_5678_9abc_def0u64);
    let images: Vec<f32> = (0..batch * pixels)
        .map(|i| ((i * 37) % 256) as f32 / 255.0)
        .collect();
    let samples: Vec<u64> = (0..batch as u64).map(|b| b * 0x1_0000_0001 + 7).collect();
    let want = rate_encode_batch(&images, pixels, &samples, steps, seed).unwrap();
    let x = DeviceTensor::from_f32(&dev, Dtype::F32, &[batch, pixels], &images).unwrap();
    let got = encode::rate_encode(&dev, &x, &samples, steps, seed)
        .unwrap()
        .to_f32()
        .unwrap();
    assert_eq!(got, want);
    let rate = got.iter().sum::<f32>() / got.len() as f32;
    let mean = images.iter().sum::<f32>() / images.len() as f32;
    assert!(
        (rate - mean).abs() < 0.05,
        "firing rate {rate} vs mean intensity {mean}"
    );
    // Bad shapes are errors.
    assert!(encode::rate_encode(&dev, &x, &samples[..2], steps, seed).is_err());
}
