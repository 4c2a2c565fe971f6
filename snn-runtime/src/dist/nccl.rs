//! The processes' one channel for training traffic: an NCCL communicator over the ranks of
//! a [`World`], its collectives queued on each device's stream like every other launch.
#![allow(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use cudarc::driver::{CudaStream, DevicePtrMut, DeviceSlice, SyncOnDrop, sys::CUdeviceptr};
use cudarc::nccl::result::{NcclError, NcclStatus};
use cudarc::nccl::{Comm, Id, ReduceOp};
use snn_codegen::Dtype;

use super::{DistError, World, rendezvous};
use crate::device::Device;
use crate::error::RuntimeError;
use crate::tensor::DeviceTensor;

/// NCCL's unique id, the bytes the rendezvous hands every rank.
const ID_BYTES: usize = 128;

/// This process's member of the run's NCCL communicator.
pub struct Communicator {
    comm: Member,
    device: Arc<Device>,
    world: World,
}

/// cudarc's communicator, which may move to another thread.
struct Member(Comm);

// SAFETY: an NCCL communicator may be called from any thread, one call at a time (NCCL
// forbids only concurrent calls on one communicator). `Member` is not `Sync` and only its
// owning `Communicator` calls it, through `&self` methods of a type that is not `Sync`
// either, so calls never overlap; its stream is the device's, which is `Send`.
unsafe impl Send for Member {}

impl std::fmt::Debug for Communicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Communicator")
            .field("rank", &self.world.rank)
            .field("size", &self.world.size)
            .field("device", &self.device.info.ordinal)
            .finish()
    }
}

impl Communicator {
    /// Joins the run: rank 0 makes NCCL's id, the rendezvous at the world's master address
    /// hands it to every rank (waiting up to `timeout` for all of them), and each creates
    /// its member on `device`. Every rank must call this, or the others wait.
    pub fn join(
        device: &Arc<Device>,
        world: &World,
        timeout: Duration,
    ) -> Result<Self, RuntimeError> {
        crate::libs::nccl()?;
        device.bind()?;
        let nccl = |doing: &str| {
            let doing = doing.to_string();
            move |e: NcclError| RuntimeError::Dist(DistError::Nccl(format!("{doing}: {e:?}")))
        };
        let mine = if world.rank == 0 {
            let id = Id::new().map_err(nccl("creating the NCCL id"))?;
            id.internal().iter().map(|&c| c as u8).collect()
        } else {
            Vec::new()
        };
        let bytes = rendezvous::exchange(world, &mine, timeout)?;
        let internal: [std::ffi::c_char; ID_BYTES] = bytes
            .iter()
            .map(|&b| b as std::ffi::c_char)
            .collect::<Vec<_>>()
            .try_into()
            .map_err(|_| {
                DistError::Rendezvous(format!(
                    "rank 0 sent {} bytes where NCCL's id has {ID_BYTES}",
                    bytes.len()
                ))
            })?;
        let comm = Comm::from_rank(
            device.stream.clone(),
            world.rank,
            world.size,
            Id::uninit(internal),
        )
        .map_err(nccl("joining the NCCL communicator"))?;
        Ok(Self {
            comm: Member(comm),
            device: device.clone(),
            world: world.clone(),
        })
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// Replaces `t` (f32, on this communicator's device) with its mean over the ranks, in
    /// place, queued on the device's stream.
    pub fn all_reduce_mean(&self, t: &DeviceTensor) -> Result<(), RuntimeError> {
        self.collective("averaging", t, |comm, flat| {
            comm.all_reduce_in_place(flat, &ReduceOp::Avg)
        })
    }

    /// Replaces `t` (f32, on this communicator's device) with rank 0's `t`, in place.
    pub fn broadcast_from_rank0(&self, t: &DeviceTensor) -> Result<(), RuntimeError> {
        self.collective("broadcasting", t, |comm, flat| {
            comm.broadcast_in_place(flat, 0)
        })
    }

    /// Runs `op` on `t` after checking that NCCL can take it.
    fn collective(
        &self,
        doing: &str,
        t: &DeviceTensor,
        op: impl FnOnce(&Comm, &mut Flat<'_>) -> Result<NcclStatus, NcclError>,
    ) -> Result<(), RuntimeError> {
        if t.dtype != Dtype::F32 || !Arc::ptr_eq(t.device(), &self.device) {
            return Err(RuntimeError::invalid(
                doing,
                format!(
                    "the tensor is {} on device {}; NCCL takes f32 tensors of device {} here",
                    t.dtype,
                    t.device().info.ordinal,
                    self.device.info.ordinal
                ),
            ));
        }
        if t.is_empty() {
            return Ok(());
        }
        let mut flat = Flat {
            t,
            stream: &self.device.stream,
        };
        op(&self.comm.0, &mut flat).map_err(|e| {
            RuntimeError::Dist(DistError::Nccl(format!(
                "{doing} {} values over {} ranks: {e:?}",
                t.len(),
                self.world.size
            )))
        })?;
        Ok(())
    }
}

/// A device tensor as NCCL's collectives take a buffer: its address and length.
struct Flat<'a> {
    t: &'a DeviceTensor,
    stream: &'a Arc<CudaStream>,
}

impl DeviceSlice<f32> for Flat<'_> {
    fn len(&self) -> usize {
        self.t.len()
    }

    fn stream(&self) -> &Arc<CudaStream> {
        self.stream
    }
}

impl DevicePtrMut<f32> for Flat<'_> {
    fn device_ptr_mut<'a>(&'a mut self, _stream: &'a CudaStream) -> (CUdeviceptr, SyncOnDrop<'a>) {
        // All work on a device is queued on its one stream, the communicator's too: the
        // collective is ordered after the kernels that wrote the tensor, and before those
        // that read it, with no event or synchronisation.
        (self.t.ptr(), SyncOnDrop::Sync(None))
    }
}
