//! The kernel cache: compiled modules kept in memory per context and as cubin files on disk.
//!
//! The key hashes everything that changes the binary: this crate's version, the source,
//! the compile options, the architecture and NVRTC's version. Files are written to a
//! temporary name and renamed into place, so concurrent processes never see a partial
//! entry; an entry that fails its checksum or does not load is discarded and recompiled.
//!
//! Location: `SNN_CACHE_DIR`, else `$XDG_CACHE_HOME/snn/kernels`, else
//! `~/.cache/snn/kernels`. `SNN_CACHE=off` keeps the cache in memory only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cudarc::driver::{CudaContext, CudaModule};
use cudarc::nvrtc::Ptx;
use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

use crate::error::RuntimeError;
use crate::nvrtc;

/// What the cache has done since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CacheStats {
    pub memory_hits: u64,
    pub disk_hits: u64,
    pub compiles: u64,
    /// Seconds spent in NVRTC.
    pub compile_seconds: f64,
    /// Disk entries found corrupt or unloadable, and recompiled.
    pub discarded: u64,
}

#[derive(Debug)]
pub struct KernelCache {
    dir: Option<PathBuf>,
    memory: Mutex<HashMap<String, Arc<CudaModule>>>,
    stats: Mutex<CacheStats>,
}

/// Marks a cache file, with a format version: entries of another version are discarded
/// and recompiled (version 2 checksums with XXH3 instead of FNV-1a).
const MAGIC: &[u8; 8] = b"SNNCUBN2";

impl KernelCache {
    /// Configured from `SNN_CACHE` and `SNN_CACHE_DIR` (see the module docs).
    pub fn from_env() -> Self {
        let off = std::env::var("SNN_CACHE").is_ok_and(|v| v.eq_ignore_ascii_case("off"));
        let dir = if off {
            None
        } else if let Some(d) = std::env::var_os("SNN_CACHE_DIR") {
            Some(PathBuf::from(d))
        } else if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
            Some(PathBuf::from(d).join("snn/kernels"))
        } else {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/snn/kernels"))
        };
        Self::new(dir)
    }

    /// A cache on disk at `dir`, or in memory only.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            memory: Mutex::default(),
            stats: Mutex::default(),
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    pub fn stats(&self) -> CacheStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, f: impl FnOnce(&mut CacheStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The cache key of a source compiled with `options` for `arch`.
    pub fn key(source: &str, arch: &str, options: &[&str]) -> Result<String, RuntimeError> {
        let (major, minor) = nvrtc::version()?;
        let text = format!(
            "snn-runtime {}\0nvrtc {major}.{minor}\0{arch}\0{}\0{source}",
            env!("CARGO_PKG_VERSION"),
            options.join(" ")
        );
        Ok(format!("{:032x}", xxh3_128(text.as_bytes())))
    }

    /// The module of `source` for `ctx`'s device: from memory, from disk, or compiled.
    pub fn module(
        &self,
        ctx: &Arc<CudaContext>,
        source: &str,
        name: &str,
        arch: &str,
        options: &[&str],
    ) -> Result<Arc<CudaModule>, RuntimeError> {
        let key = Self::key(source, arch, options)?;
        let memory_key = format!("{}:{key}", ctx.ordinal());
        if let Some(m) = self
            .memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&memory_key)
        {
            self.count(|s| s.memory_hits += 1);
            return Ok(m.clone());
        }
        let path = self.dir.as_ref().map(|d| d.join(format!("{key}.cubin")));
        let mut module = None;
        if let Some(path) = &path {
            if let Some(cubin) = read_entry(path) {
                match ctx.load_module(Ptx::from_binary(cubin)) {
                    Ok(m) => {
                        self.count(|s| s.disk_hits += 1);
                        module = Some(m);
                    }
                    Err(_) => {
                        let _ = std::fs::remove_file(path);
                        self.count(|s| s.discarded += 1);
                    }
                }
            } else if path.exists() {
                let _ = std::fs::remove_file(path);
                self.count(|s| s.discarded += 1);
            }
        }
        let module = match module {
            Some(m) => m,
            None => {
                let start = Instant::now();
                let out = nvrtc::compile(source, name, arch, options)?;
                self.count(|s| {
                    s.compiles += 1;
                    s.compile_seconds += start.elapsed().as_secs_f64();
                });
                if let Some(path) = &path {
                    write_entry(path, &out.image)?;
                }
                ctx.load_module(Ptx::from_binary(out.image)).map_err(|e| {
                    RuntimeError::driver(format!("loading the module of `{name}`"), e)
                })?
            }
        };
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(memory_key, module.clone());
        Ok(module)
    }
}

/// A cache file's cubin, if the file is whole: magic, checksum (XXH3, 64 bits), payload.
fn read_entry(path: &Path) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return None;
    }
    let sum = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
    let payload = &bytes[16..];
    (xxh3_64(payload) == sum).then(|| payload.to_vec())
}

/// Writes an entry atomically (with its magic and checksum).
fn write_entry(path: &Path, cubin: &[u8]) -> Result<(), RuntimeError> {
    let mut bytes = Vec::with_capacity(cubin.len() + 16);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&xxh3_64(cubin).to_le_bytes());
    bytes.extend_from_slice(cubin);
    write_atomic(path, &bytes).map_err(|e| RuntimeError::Cache {
        dir: path
            .parent()
            .unwrap_or(Path::new("."))
            .display()
            .to_string(),
        error: e.to_string(),
    })
}

/// Writes a file of the cache atomically: to a unique temporary file in its folder (made
/// if missing), then renamed into place, so readers see the old file or the new one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(
        ".{}.{}.{nanos}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_corruption_is_detected() {
        let dir = std::env::temp_dir().join(format!("snn-cache-test-{}", std::process::id()));
        let path = dir.join("k.cubin");
        write_entry(&path, b"not really a cubin").unwrap();
        assert_eq!(
            read_entry(&path).as_deref(),
            Some(&b"not really a cubin"[..])
        );
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read_entry(&path), None, "a flipped bit fails the checksum");
        std::fs::write(&path, &bytes[..10]).unwrap();
        assert_eq!(read_entry(&path), None, "a truncated file is rejected");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_hashes_are_stable() {
        // XXH3 of the empty input (the reference implementation's values): keys and
        // checksums are the same in every process and build.
        assert_eq!(xxh3_64(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(xxh3_128(b""), 0x99aa_06d3_0147_98d8_6001_c324_468d_497f);
    }

    #[test]
    fn entries_of_the_previous_format_are_stale() {
        let dir = std::env::temp_dir().join(format!("snn-cache-stale-{}", std::process::id()));
        let path = dir.join("k.cubin");
        write_entry(&path, b"cubin").unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[..8].copy_from_slice(b"SNNCUBN1");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read_entry(&path), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
