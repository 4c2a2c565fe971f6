//! Without a CUDA driver (as on CI), asking for a device is an error that says what is
//! missing and lists where it was looked for; never a panic.

use snn_runtime::{Device, RuntimeError};

#[test]
fn a_missing_driver_is_a_clear_error() {
    match Device::count() {
        Ok(_) => eprintln!("a CUDA driver is installed here: nothing to check"),
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
