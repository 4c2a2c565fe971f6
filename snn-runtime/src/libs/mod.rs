//! Finding the CUDA libraries at run time.
//!
//! cudarc loads each library by its bare name, so only the loader's path is searched, and
//! it panics when the library is missing. Before cudarc's first use, we look in the usual
//! places ourselves and load what we find by full path, globally, so that cudarc's load by
//! name then finds it already loaded. A library found nowhere is an error that lists every
//! place searched.
#![allow(unsafe_code)]

mod search;

use std::sync::OnceLock;

use search::{CUBLAS, CUDNN, DRIVER, NCCL, NVRTC, Spec, search_dirs};

use crate::error::RuntimeError;

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

/// Declares `pub fn $name()`, which makes the library of `$spec` available to cudarc (once
/// per process) and returns where it was found.
macro_rules! library {
    ($name:ident, $spec:ident, $what:literal) => {
        #[doc = concat!("Makes ", $what, " available to cudarc; returns where it was found.")]
        pub fn $name() -> Result<String, RuntimeError> {
            static SLOT: OnceLock<Result<String, RuntimeError>> = OnceLock::new();
            load(&$spec, &SLOT)
        }
    };
}

library!(nvrtc, NVRTC, "NVRTC");
library!(driver, DRIVER, "the CUDA driver library");
library!(cudnn, CUDNN, "cuDNN 9");
library!(cublas, CUBLAS, "cuBLAS 13");
library!(nccl, NCCL, "NCCL 2");

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
