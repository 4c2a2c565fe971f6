//! Finding the CUDA libraries at run time.
//!
//! cudarc loads each library by its bare name, so only the loader's path is searched, and
//! it panics when the library is missing. Before cudarc's first use, we look in the usual
//! places ourselves and load what we find by full path, globally, so that cudarc's load by
//! name then finds it already loaded. A library found nowhere is an error that lists every
//! place searched.
#![allow(unsafe_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::error::RuntimeError;

/// A CUDA library: its file names (newest first), the pip packages that ship it, and how
/// to install it.
struct Spec {
    what: &'static str,
    files: &'static [&'static str],
    pip: &'static [&'static str],
    install: &'static str,
}

const NVRTC: Spec = Spec {
    what: "the CUDA runtime compiler NVRTC (libnvrtc)",
    files: &["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"],
    pip: &["nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib"],
    install: "Install the CUDA toolkit, or `pip install nvidia-cuda-nvrtc==13.0.*`, and set CUDA_HOME or LD_LIBRARY_PATH to its lib directory.",
};

const DRIVER: Spec = Spec {
    what: "the CUDA driver (libcuda)",
    files: &["libcuda.so.1", "libcuda.so"],
    pip: &[],
    install: "Install the NVIDIA driver (CUDA 13 or newer), or set CUDA_HOME or LD_LIBRARY_PATH to the directory that holds libcuda.so.1.",
};

const CUDNN: Spec = Spec {
    what: "cuDNN 9 (libcudnn.so.9, for convolutions)",
    files: &["libcudnn.so.9"],
    pip: &["nvidia/cudnn/lib", "nvidia/cu13/lib"],
    install: "Install cuDNN 9 for CUDA 13 (the `cudnn9-cuda-13` package, or `pip install nvidia-cudnn-cu13`), and set CUDA_HOME or LD_LIBRARY_PATH to its lib directory.",
};

const CUBLAS: Spec = Spec {
    what: "cuBLAS 13 (libcublas.so.13, for linear layers)",
    files: &["libcublas.so.13"],
    pip: &["nvidia/cu13/lib", "nvidia/cublas/lib"],
    install: "Install the CUDA 13 toolkit's cuBLAS (`libcublas-13-0`, or `pip install nvidia-cublas`), and set CUDA_HOME or LD_LIBRARY_PATH to its lib directory.",
};

/// Directories to search, in order.
fn search_dirs(spec: &Spec) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Some(v) = std::env::var_os(var) {
            let base = PathBuf::from(v);
            dirs.push(base.join("lib64"));
            dirs.push(base.join("lib"));
        }
    }
    dirs.push("/usr/local/cuda/lib64".into());
    dirs.push("/usr/local/nvidia/lib64".into());
    dirs.push("/usr/lib/x86_64-linux-gnu".into());
    dirs.push("/usr/lib64".into());
    // pip: every site-packages on the Python path, and the ones beside this executable.
    let mut roots: Vec<PathBuf> = std::env::var_os("PYTHONPATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(home).join(".local/lib"));
    }
    roots.push("/usr/local/lib".into());
    roots.push("/usr/lib".into());
    for root in roots {
        let mut candidates = vec![root.clone()];
        if let Ok(entries) = std::fs::read_dir(&root) {
            let mut pythons: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("python"))
                })
                .collect();
            // Directory order is the file system's: sort so that the search is repeatable.
            pythons.sort();
            for p in pythons {
                candidates.push(p.join("site-packages"));
                candidates.push(p.join("dist-packages"));
            }
        }
        for c in candidates {
            for sub in spec.pip {
                dirs.push(c.join(sub));
            }
        }
    }
    dirs
}

/// Loads `spec` (once per process): by bare name if the loader finds it, else from the
/// first search directory that has it.
fn load(
    spec: &Spec,
    slot: &'static OnceLock<Result<String, RuntimeError>>,
) -> Result<String, RuntimeError> {
    slot.get_or_init(|| {
        for file in spec.files {
            if open_global(*file) {
                return Ok((*file).to_string());
            }
        }
        let dirs = search_dirs(spec);
        for dir in &dirs {
            for file in spec.files {
                let path = dir.join(file);
                if path.is_file() && open_global(&path) {
                    return Ok(path.display().to_string());
                }
            }
        }
        let mut searched: Vec<String> = vec![format!(
            "{} on the loader's path (LD_LIBRARY_PATH)",
            spec.files.join(", ")
        )];
        searched.extend(dirs.iter().map(|d| d.display().to_string()));
        Err(RuntimeError::MissingLibrary {
            what: spec.what,
            searched,
            install: spec.install,
        })
    })
    .clone()
}

/// Loads a library for good, `RTLD_NOW | RTLD_GLOBAL` (resolved now; later loads by name
/// find it). Returns whether it loaded.
fn open_global(file: impl libloading::AsFilename) -> bool {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: loading a CUDA library runs its initialisers, which have no preconditions.
    match unsafe { Library::open(Some(file), RTLD_NOW | RTLD_GLOBAL) } {
        Ok(lib) => {
            // Leaked on purpose: the library must stay loaded for cudarc.
            std::mem::forget(lib);
            true
        }
        Err(_) => false,
    }
}

/// Makes NVRTC available to cudarc; returns where it was found.
pub fn nvrtc() -> Result<String, RuntimeError> {
    static SLOT: OnceLock<Result<String, RuntimeError>> = OnceLock::new();
    load(&NVRTC, &SLOT)
}

/// Makes the CUDA driver library available to cudarc; returns where it was found.
pub fn driver() -> Result<String, RuntimeError> {
    static SLOT: OnceLock<Result<String, RuntimeError>> = OnceLock::new();
    load(&DRIVER, &SLOT)
}

/// Makes cuDNN 9 available to cudarc; returns where it was found.
pub fn cudnn() -> Result<String, RuntimeError> {
    static SLOT: OnceLock<Result<String, RuntimeError>> = OnceLock::new();
    load(&CUDNN, &SLOT)
}

/// Makes cuBLAS 13 available to cudarc; returns where it was found.
pub fn cublas() -> Result<String, RuntimeError> {
    static SLOT: OnceLock<Result<String, RuntimeError>> = OnceLock::new();
    load(&CUBLAS, &SLOT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_lists_where_it_was_looked_for_and_how_to_install_it() {
        const ABSENT: Spec = Spec {
            what: "the test library (libsnn-absent.so.7)",
            files: &["libsnn-absent.so.7"],
            pip: &["nvidia/absent/lib"],
            install: "Install the test library.",
        };
        static SLOT: OnceLock<Result<String, RuntimeError>> = OnceLock::new();
        let msg = load(&ABSENT, &SLOT)
            .expect_err("no such library exists")
            .to_string();
        assert!(msg.starts_with("the test library (libsnn-absent.so.7) was not found"));
        for needed in [
            "libsnn-absent.so.7 on the loader's path",
            "/usr/local/cuda/lib64",
            "nvidia/absent/lib",
            "Install the test library.",
        ] {
            assert!(msg.contains(needed), "`{needed}` missing from: {msg}");
        }
    }
}
