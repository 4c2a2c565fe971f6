//! Without a CUDA driver (as on CI), asking for a device is an error that says what is
//! missing and lists where it was looked for; never a panic. Where the build script finds a
//! driver, this cannot be checked, and the test shows as ignored.

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
