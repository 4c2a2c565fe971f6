//! Network layers on the GPU: the `snn-nn` layer descriptions run with cuDNN (convolutions),
//! cuBLAS (linear layers) and small hand-written kernels (batch-norm, pooling, losses,
//! optimizers), each checked against the CPU reference in `snn_nn::cpu`.

/// Declares `$name`, the owner of a raw cuDNN or cuBLAS object (a handle, a descriptor)
/// that `$destroy` frees once, when the owner is dropped.
macro_rules! owned {
    ($(#[$doc:meta])* $name:ident, $raw:ty, $destroy:path) => {
        $(#[$doc])*
        pub(crate) struct $name(pub(crate) $raw);

        // SAFETY: the library may use its objects from any thread, one call at a time: a
        // handle is only reached through its owner's mutex, and a descriptor, host memory
        // the library reads during calls, is only changed with the `Cudnn` mutex held.
        unsafe impl Send for $name {}
        // SAFETY: as above.
        unsafe impl Sync for $name {}

        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: created once by the library and destroyed once, here. An error
                // while tearing down cannot be acted on.
                let _ = unsafe { $destroy(self.0) };
            }
        }
    };
}

mod bias;
pub mod conv;
pub mod fusion;
pub mod kernels;
pub mod linear;
pub mod loss;
pub mod memory;
pub mod model;
pub mod optim;
pub mod train;

pub use conv::ConvMath;
pub use model::{GpuModel, GpuTrace, ModelOptions};
pub use train::{Backend, GpuTrainer};
