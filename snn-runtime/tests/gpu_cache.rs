//! The kernel cache on disk: compiled once, found again by a restarted process (a fresh
//! `Device` with a fresh cache on the same directory), corrupt entries discarded and
//! recompiled, no temporary files left behind, and an in-memory-only cache that compiles
//! every time and writes nothing.
//!
//! One test in its own binary: it sets `SNN_CACHE_DIR` and `SNN_CACHE`, which
//! `Device::open` reads, so nothing may run beside it (kernel_cache_env.rs checks how the
//! cache reads them, without a GPU).
#![allow(clippy::unwrap_used, unsafe_code)]

mod gpu_common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gpu_common::{device, temp_dir};
use snn_codegen::Layout;
use snn_codegen::cuda::{COMPILE_OPTIONS, KernelOptions, generate};
use snn_codegen::{Dtype, Storage, compile, zoo};
use snn_runtime::{CacheStats, Device, DeviceTensor, KernelCache, LayerConfig, NeuronLayer};
use xxhash_rust::xxh3::xxh3_64;

/// `(memory hits, disk hits, compiles, discarded)`.
fn counts(s: CacheStats) -> (u64, u64, u64, u64) {
    (s.memory_hits, s.disk_hits, s.compiles, s.discarded)
}

/// Every file under `dir` (recursively), sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                out.extend(files(&path));
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn cubins(dir: &Path) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "cubin"))
        .collect()
}

/// Asserts that `dir` holds exactly `count` cache entries and nothing else (no temporary
/// files from interrupted or concurrent writes).
fn assert_only_entries(dir: &Path, count: usize) {
    let all = files(dir);
    let names: Vec<String> = all
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.ends_with(".cubin") && !n.starts_with('.')),
        "the cache directory holds more than entries: {names:?}"
    );
    assert_eq!(all.len(), count, "cache entries: {names:?}");
}

/// Damages a cache file's bytes; `false` where it cannot.
type Corruption = fn(&mut Vec<u8>) -> bool;

#[allow(clippy::ptr_arg)]
fn flip_middle(b: &mut Vec<u8>) -> bool {
    let mid = b.len() / 2;
    b[mid] ^= 0x5A;
    true
}

fn truncate(b: &mut Vec<u8>) -> bool {
    b.truncate(b.len() / 3);
    true
}

/// A well-formed entry (magic and checksum right) whose payload the driver rejects: the
/// "does not load" path. NUL-terminated, since the driver reads an image that is not ELF as
/// PTX text. `false` if the entry's checksum is not XXH3-64 of the payload after a 16-byte
/// header (the format this test knows).
fn not_a_cubin(b: &mut Vec<u8>) -> bool {
    if b.len() < 16 || xxh3_64(&b[16..]) != u64::from_le_bytes(b[8..16].try_into().unwrap()) {
        return false;
    }
    let payload = b"this is not a cubin\0";
    b.truncate(8);
    b.extend_from_slice(&xxh3_64(payload).to_le_bytes());
    b.extend_from_slice(payload);
    true
}

/// A layer of the paper's LIF on `dev`, and its spikes for a fixed input: the kernels work,
/// wherever the cache found them.
fn lif_spikes(dev: &Arc<Device>) -> Vec<f32> {
    let (steps, n) = (8, 64);
    let layer = NeuronLayer::new(
        dev,
        &zoo::PaperLif::default(),
        LayerConfig::new(Layout::flat(n)),
    )
    .unwrap();
    let x: Vec<f32> = (0..steps * n).map(|k| (k % 7) as f32 / 10.0).collect();
    let x = DeviceTensor::from_f32(dev, Dtype::F32, &[steps, n], &x).unwrap();
    let fwd = layer.forward(&[&x], None, true).unwrap();
    let out = fwd.outputs[0].to_f32().unwrap();
    assert!(out.contains(&1.0) && out.contains(&0.0));
    out
}

/// A fresh device (a fresh cache from the environment), as a restarted process would have.
fn restarted() -> Arc<Device> {
    Device::open(0).unwrap()
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test -p snn-runtime -- --ignored gpu"]
fn gpu_kernel_cache_on_disk() {
    let root = temp_dir("gpu-cache");
    let dir = root.join("kernels");
    // SAFETY: this binary has this one test, and no other thread has been started yet that
    // could read the environment while it is written.
    unsafe {
        std::env::remove_var("SNN_CACHE");
        std::env::set_var("SNN_CACHE_DIR", &dir);
    }
    let dev = device();
    assert_eq!(dev.cache.dir(), Some(dir.as_path()));

    // 1. A first process compiles the layer's three kernels and writes them.
    let spikes = lif_spikes(&dev);
    assert_eq!(counts(dev.cache.stats()), (0, 0, 3, 0), "first process");
    assert_only_entries(&dir, 3);
    // A second layer in the same process takes them from memory.
    assert_eq!(lif_spikes(&dev), spikes);
    assert_eq!(
        counts(dev.cache.stats()),
        (3, 0, 3, 0),
        "same process, again"
    );
    eprintln!("first process: {:?}", dev.cache.stats());

    // 2. A restarted process finds all three on disk.
    let dev2 = restarted();
    assert_eq!(lif_spikes(&dev2), spikes);
    assert_eq!(
        counts(dev2.cache.stats()),
        (0, 3, 0, 0),
        "restarted process"
    );
    assert_only_entries(&dir, 3);
    drop(dev2);

    // 3. Corrupt entries are discarded and recompiled; the others still load.
    let entries = cubins(&dir);
    let corruptions: [(&str, Corruption); 3] = [
        ("a flipped byte in the middle", flip_middle),
        ("truncated", truncate),
        (
            "a valid checksum over a payload that is no cubin",
            not_a_cubin,
        ),
    ];
    for (k, (what, corrupt)) in corruptions.iter().enumerate() {
        let path = &entries[k % entries.len()];
        let mut bytes = std::fs::read(path).unwrap();
        if !corrupt(&mut bytes) {
            eprintln!("not tested: {what} (the entry format is not the one this test knows)");
            continue;
        }
        std::fs::write(path, &bytes).unwrap();
        let dev3 = restarted();
        assert_eq!(lif_spikes(&dev3), spikes, "{what}: results");
        assert_eq!(
            counts(dev3.cache.stats()),
            (0, 2, 1, 1),
            "{what}: one entry discarded and recompiled, two loaded from disk"
        );
        assert_only_entries(&dir, 3);
        // And the rewritten entry is good again.
        let dev4 = restarted();
        assert_eq!(lif_spikes(&dev4), spikes);
        assert_eq!(counts(dev4.cache.stats()), (0, 3, 0, 0), "{what}: repaired");
        eprintln!("{what}: discarded, recompiled, repaired");
    }

    // 4. Caches constructed directly: the kernels of another neuron (so nothing is on disk
    // yet), through `KernelCache::module`, as a process with its own cache would.
    let compiled = compile(&zoo::Alif::default(), Storage::F32).unwrap();
    let kernels = generate(&compiled, &KernelOptions::default());
    let arch = dev.info.arch();
    let load_all = |cache: &KernelCache| {
        for k in kernels.all() {
            let name = &k.signatures[0].name;
            let module = cache
                .module(dev.context(), &k.source, name, &arch, &COMPILE_OPTIONS)
                .unwrap();
            module.load_function(name).unwrap();
        }
    };
    let own = root.join("own");
    let first = KernelCache::new(Some(own.clone()));
    load_all(&first);
    assert_eq!(counts(first.stats()), (0, 0, 3, 0));
    load_all(&first);
    assert_eq!(counts(first.stats()), (3, 0, 3, 0));
    let second = KernelCache::new(Some(own.clone()));
    load_all(&second);
    assert_eq!(counts(second.stats()), (0, 3, 0, 0));
    let victim = &cubins(&own)[1];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    std::fs::write(victim, &bytes).unwrap();
    let third = KernelCache::new(Some(own.clone()));
    load_all(&third);
    assert_eq!(counts(third.stats()), (0, 2, 1, 1));
    assert_only_entries(&own, 3);

    // 5. In memory only (`SNN_CACHE=off`): every new cache compiles, nothing is written.
    let before = files(&root);
    for _ in 0..2 {
        let cache = KernelCache::new(None);
        assert_eq!(cache.dir(), None);
        load_all(&cache);
        load_all(&cache);
        assert_eq!(counts(cache.stats()), (3, 0, 3, 0), "in-memory cache");
        assert!(cache.stats().compile_seconds > 0.0);
    }
    assert_eq!(files(&root), before, "an in-memory cache wrote files");

    std::fs::remove_dir_all(&root).unwrap();
}
