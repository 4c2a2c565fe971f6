//! Pinned asynchronous uploads (snn_runtime::staging): uploaded tensors and batches equal
//! the host data, also when the ring of pinned buffers is reused while the GPU is busy and
//! the uploads run ahead of the compute; and the pipeline loader -> upload (copy stream)
//! -> u8 to f32 -> rate encoding (compute stream) gives bit-identical spikes to the CPU
//! encoder.
#![allow(clippy::unwrap_used)]

mod gpu_common;

use std::sync::Arc;

use snn_codegen::Dtype;
use snn_data::encode::rate_encode_batch;
use snn_data::{Batch, BatchLayout, ImageDataset, Loader, LoaderConfig};
use snn_runtime::staging::{DeviceBatch, Upload, UploadFrames, Uploader};
use snn_runtime::{DeviceTensor, encode};

/// Bytes that differ between uploads and positions.
fn pattern(k: usize, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (gpu_common::mix((k as u64) << 32 | i as u64) >> 56) as u8)
        .collect()
}

/// Event frames of two samples (5 and 6, labels 10 and 0), time-major.
fn time_major<E>(data: Vec<E>, shape: &[usize]) -> Batch<E> {
    Batch {
        indices: vec![5, 6],
        data,
        labels: vec![10, 0],
        shape: shape.to_vec(),
        layout: BatchLayout::TimeMajor,
    }
}

/// `[B, P]` intensities large enough that rate encoding them keeps the GPU busy for a
/// while, so that later uploads queue behind it.
fn busy_work(dev: &Arc<snn_runtime::Device>) -> (DeviceTensor, Vec<u64>) {
    let (batch, pixels) = (256usize, 4096usize);
    let x: Vec<f32> = (0..batch * pixels)
        .map(|i| (i % 97) as f32 / 96.0)
        .collect();
    let t = DeviceTensor::from_f32(dev, Dtype::F32, &[batch, pixels], &x).unwrap();
    (t, (0..batch as u64).collect())
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_uploads_equal_the_host_data_while_the_ring_is_reused() {
    let dev = gpu_common::device();
    let (busy, busy_samples) = busy_work(&dev);
    let mut up = Uploader::with_slots(&dev, 1 << 20, 2).unwrap();
    let sizes = [1usize, 1000, 4096, 1 << 20, 777, 65_536, 3];
    let mut kept = Vec::new();
    for k in 0..21 {
        let n = sizes[k % sizes.len()];
        let bytes = pattern(k, n);
        kept.push((
            bytes.clone(),
            up.upload_bytes(Dtype::U8, &[n], &bytes).unwrap(),
        ));
        if k % 4 == 0 {
            // Compute queued between uploads: the next copies into the same staging
            // buffers must wait for it, and the host must not refill a pinned buffer
            // before its copy ran.
            // (Dropping the output right away frees it in stream order, after the kernel.)
            encode::rate_encode(&dev, &busy, &busy_samples, 64, k as u64).unwrap();
        }
    }
    let stats = up.stats();
    assert_eq!(stats.uploads, 21);
    assert_eq!(
        stats.bytes,
        (0..21).map(|k| sizes[k % sizes.len()] as u64).sum::<u64>()
    );
    for (k, (bytes, tensor)) in kept.iter().enumerate() {
        assert_eq!(tensor.dtype, Dtype::U8);
        assert_eq!(tensor.shape, [bytes.len()]);
        let want: Vec<f32> = bytes.iter().map(|&b| f32::from(b)).collect();
        assert_eq!(tensor.to_f32().unwrap(), want, "upload {k}");
    }

    // Typed uploads: f32 bytes, and bytes written in place by a closure.
    let values: Vec<f32> = (0..1000).map(|i| i as f32 * 0.37 - 11.0).collect();
    let t = up
        .upload_bytes(Dtype::F32, &[10, 100], &Dtype::F32.encode(&values))
        .unwrap();
    assert_eq!(t.shape, [10, 100]);
    assert_eq!(t.to_f32().unwrap(), values);
    let t = up
        .upload_with(Dtype::U8, &[3, 5], |buf| {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = 200 + i as u8;
            }
        })
        .unwrap();
    assert_eq!(
        t.to_f32().unwrap(),
        (0..15).map(|i| 200.0 + i as f32).collect::<Vec<_>>()
    );
    let empty = up.upload_bytes(Dtype::F32, &[0, 4], &[]).unwrap();
    assert!(empty.is_empty());
    up.synchronize().unwrap();
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_uploaded_batches_equal_the_host_batches() {
    let dev = gpu_common::device();
    let mut up = Uploader::new(&dev, 1 << 16).unwrap();
    assert_eq!(up.slots(), Uploader::DEFAULT_SLOTS);

    // Images: every u8 value, converted exactly as the CPU does.
    let pixels: Vec<u8> = (0..4 * 3 * 8 * 8).map(|i| (i * 7 % 256) as u8).collect();
    let batch = Batch {
        indices: vec![9, 2, 40, 7],
        data: pixels.clone(),
        labels: vec![3, 1, 4, 1],
        shape: vec![4, 3, 8, 8],
        layout: BatchLayout::SampleMajor,
    };
    let gpu = batch.upload_images(&mut up).unwrap();
    assert_eq!(gpu.data.shape, [4, 192]);
    assert_eq!(gpu.data.dtype, Dtype::F32);
    let got = gpu.data.to_f32().unwrap();
    let want = batch.unit();
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(gpu.labels.to_f32().unwrap(), [3.0, 1.0, 4.0, 1.0]);
    assert_eq!(gpu.samples, [9, 2, 40, 7]);
    // Time-major calls refuse an image batch.
    assert!(batch.upload_counts(&mut up).is_err());

    // Event frames [T, B, 2, H, W]: u8 counts become f32 counts, f32 frames travel as is.
    let shape = vec![3, 2, 2, 5, 4];
    let counts: Vec<u8> = (0..240).map(|i| (i * 13 % 256) as u8).collect();
    let frames = time_major(counts.clone(), &shape);
    let gpu = frames.upload_counts(&mut up).unwrap();
    assert_eq!(gpu.data.shape, shape);
    assert_eq!(
        gpu.data.to_f32().unwrap(),
        counts.iter().map(|&c| f32::from(c)).collect::<Vec<_>>()
    );
    assert_eq!(gpu.labels.to_f32().unwrap(), [10.0, 0.0]);
    assert!(frames.upload_images(&mut up).is_err());
    let values: Vec<f32> = counts.iter().map(|&c| f32::from(c) * 1.5).collect();
    let float_frames = time_major(values.clone(), &shape);
    let gpu = float_frames.upload_frames(&mut up).unwrap();
    assert_eq!(gpu.data.to_f32().unwrap(), values);
    assert_eq!(gpu.labels.to_f32().unwrap(), [10.0, 0.0]);

    // Bad calls are errors that say what to do.
    let small = &mut Uploader::new(&dev, 100).unwrap();
    let err = small
        .upload_bytes(Dtype::U8, &[200], &[0; 200])
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_bytes of at least 200"), "{err}");
    assert!(Uploader::new(&dev, 0).is_err());
    assert!(Uploader::with_slots(&dev, 100, 1).is_err());
    assert!(up.upload_bytes(Dtype::F32, &[3], &[0; 11]).is_err());
    assert!(
        up.upload_images(&pixels, &[4, 3, 8, 8], &[0; 3], &[0; 4])
            .is_err()
    );
    assert!(up.upload_counts(&counts, &[240], &[], &[]).is_err());
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_pipeline_spikes_equal_the_cpu_encoder() {
    let dev = gpu_common::device();
    // 23 images of 3 x 7 x 9 (not a multiple of 4 pixels), every u8 value present.
    let (n, shape) = (23usize, [3usize, 7, 9]);
    let per: usize = shape.iter().product();
    let images: Vec<u8> = (0..n * per).map(|i| (i * 31 % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let ds = Arc::new(ImageDataset::new(images, shape, labels, 10).unwrap());
    let config = LoaderConfig {
        batch_size: 5,
        shuffle: true,
        seed: 11,
        drop_last: false,
        prefetch: 2,
        workers: 2,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(ds, config).unwrap();
    let mut up = Uploader::new(&dev, loader.max_batch_bytes()).unwrap();
    let (steps, seed) = (6usize, 0xfeed_beef_u64);
    for epoch in 0..2 {
        // Upload the whole epoch first (more batches than buffers), then encode: every
        // uploaded batch must survive the reuse of the pinned and staging buffers.
        let batches: Vec<Batch> = loader.epoch(epoch).map(|b| b.unwrap()).collect();
        assert_eq!(batches.last().unwrap().len(), 3);
        let uploaded: Vec<DeviceBatch> = batches
            .iter()
            .map(|b| b.upload_images(&mut up).unwrap())
            .collect();
        for (batch, gpu) in batches.iter().zip(&uploaded) {
            let spikes = encode::rate_encode(&dev, &gpu.data, &gpu.samples, steps, seed)
                .unwrap()
                .to_f32()
                .unwrap();
            let want = rate_encode_batch(&batch.unit(), per, &batch.indices, steps, seed).unwrap();
            assert_eq!(spikes, want, "epoch {epoch}, samples {:?}", batch.indices);
            let labels: Vec<f32> = batch.labels.iter().map(|&l| f32::from(l)).collect();
            assert_eq!(gpu.labels.to_f32().unwrap(), labels);
        }
    }
}
