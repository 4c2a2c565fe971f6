//! Without a CUDA driver or NCCL (as on CI), asking for a device or for NCCL is an error
//! that says what is missing and lists where it was looked for; never a panic. Where the
//! build script finds the library, this cannot be checked, and the test shows as ignored.

use snn_runtime::{Device, RuntimeError};

#[test]
#[cfg_attr(
    snn_cuda_driver,
    ignore = "a CUDA driver is installed here: this checks the error without one"
)]
fn a_missing_driver_is_a_clear_error() {
    match Device::count() {
        Ok(n) => panic!(
            "the CUDA driver loaded ({n} devices) though the build script found none: \
             it looks where snn-runtime/src/libs/search.rs says, and on LD_LIBRARY_PATH"
        ),
        Err(RuntimeError::MissingLibrary {
            what,
            searched,
            install,
        }) => {
            assert!(what.contains("libcuda"), "{what}");
            assert!(
                searched.iter().any(|s| s.contains("LD_LIBRARY_PATH")),
                "{searched:?}"
            );
            assert!(
                searched.iter().any(|s| s.contains("/usr/local/cuda")),
                "{searched:?}"
            );
            let msg = RuntimeError::MissingLibrary {
                what,
                searched,
                install,
            }
            .to_string();
            assert!(
                msg.contains("was not found")
                    && msg.contains("NVIDIA driver")
                    && msg.contains("CUDA_HOME"),
                "{msg}"
            );
        }
        Err(other) => panic!("expected a missing-library error, got: {other}"),
    }
}

/// Without NCCL, joining a run of several processes is an error that says what is missing
/// and how to install it; never a panic (cudarc's own loader would panic).
#[test]
#[cfg_attr(
    snn_nccl,
    ignore = "NCCL is installed here: this checks the error without it"
)]
fn a_missing_nccl_is_a_clear_error() {
    match snn_runtime::libs::nccl() {
        Ok(path) => panic!(
            "NCCL loaded from {path} though the build script found none: it looks where \
             snn-runtime/src/libs/search.rs says, and on LD_LIBRARY_PATH"
        ),
        Err(e) => {
            let msg = e.to_string();
            for needed in [
                "NCCL 2",
                "was not found",
                "nvidia-nccl-cu13",
                "LD_LIBRARY_PATH",
            ] {
                assert!(msg.contains(needed), "`{needed}` missing from: {msg}");
            }
        }
    }
}
