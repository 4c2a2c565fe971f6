//! Where the kernel cache lives comes from the environment (no GPU needed): `SNN_CACHE_DIR`,
//! and `SNN_CACHE=off` (any case) for a cache in memory only.
//!
//! One test in its own binary: it sets environment variables, so nothing may run beside it.
#![allow(unsafe_code)]

use snn_runtime::KernelCache;

#[test]
fn kernel_cache_location_comes_from_the_environment() {
    let dir = std::env::temp_dir().join("snn-kernel-cache-env");
    // SAFETY: this binary has this one test, and no other thread has been started yet that
    // could read the environment while it is written.
    unsafe {
        std::env::remove_var("SNN_CACHE");
        std::env::set_var("SNN_CACHE_DIR", &dir);
    }
    assert_eq!(KernelCache::from_env().dir(), Some(dir.as_path()));
    // SAFETY: as above.
    unsafe { std::env::set_var("SNN_CACHE", "OFF") };
    assert_eq!(KernelCache::from_env().dir(), None, "SNN_CACHE=off");
}
