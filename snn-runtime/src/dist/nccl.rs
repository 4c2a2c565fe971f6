//! The processes' one channel for training traffic: an NCCL communicator over the ranks of
//! a [`World`]. Its work goes on a stream of its own, so that a gradient bucket's
//! all-reduce can travel while the device computes ([`Communicator::all_reduce_in_background`]);
//! every other call is joined to the device's stream both ways, so it runs after the
//! kernels queued before it and before those queued after, like any launch. One stream per
//! communicator keeps NCCL's work in the order it was queued, the same on every rank.
//!
//! NCCL's functions are called through cudarc's declarations (`cudarc::nccl::sys`) but
//! looked up in the library that [`crate::libs::nccl`] found: cudarc's own loader asks only
//! for names such as `libnccl.so`, and NCCL from pip (`nvidia-nccl-cu13`, what PyTorch
//! installs) ships `libnccl.so.2` alone.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cudarc::driver::{CudaEvent, CudaStream};
use cudarc::nccl::sys::{
    cudaStream_t, ncclComm_t, ncclDataType_t, ncclRedOp_t, ncclResult_t, ncclUniqueId,
};
use snn_codegen::Dtype;

use super::{DistError, World, rendezvous};
use crate::device::Device;
use crate::error::RuntimeError;
use crate::tensor::DeviceTensor;

/// NCCL's unique id, the bytes the rendezvous hands every rank.
const ID_BYTES: usize = 128;

/// The NCCL functions snn calls, from the library [`crate::libs::nccl`] found.
struct Api {
    get_unique_id: unsafe extern "C" fn(*mut ncclUniqueId) -> ncclResult_t,
    comm_init_rank:
        unsafe extern "C" fn(*mut ncclComm_t, c_int, ncclUniqueId, c_int) -> ncclResult_t,
    all_reduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        ncclDataType_t,
        ncclRedOp_t,
        ncclComm_t,
        cudaStream_t,
    ) -> ncclResult_t,
    broadcast: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        ncclDataType_t,
        c_int,
        ncclComm_t,
        cudaStream_t,
    ) -> ncclResult_t,
    all_gather: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        ncclDataType_t,
        ncclComm_t,
        cudaStream_t,
    ) -> ncclResult_t,
    send: unsafe extern "C" fn(
        *const c_void,
        usize,
        ncclDataType_t,
        c_int,
        ncclComm_t,
        cudaStream_t,
    ) -> ncclResult_t,
    recv: unsafe extern "C" fn(
        *mut c_void,
        usize,
        ncclDataType_t,
        c_int,
        ncclComm_t,
        cudaStream_t,
    ) -> ncclResult_t,
    comm_destroy: unsafe extern "C" fn(ncclComm_t) -> ncclResult_t,
    error_string: unsafe extern "C" fn(ncclResult_t) -> *const c_char,
}

/// NCCL's functions, looked up once per process.
fn api() -> Result<&'static Api, RuntimeError> {
    static API: OnceLock<Result<Api, RuntimeError>> = OnceLock::new();
    API.get_or_init(|| {
        let path = crate::libs::nccl()?;
        let missing = |name: &str, e: libloading::Error| {
            RuntimeError::Dist(DistError::Nccl(format!(
                "{path} has no `{name}` ({e}): install NCCL 2.10 or newer"
            )))
        };
        // SAFETY: loading NCCL runs its initialisers, which have no preconditions; the
        // symbols are NCCL's C API, declared above as NCCL's nccl.h declares them (the
        // types are cudarc's bindings of that header). The library stays loaded for good.
        unsafe {
            let lib = libloading::Library::new(&path).map_err(|e| missing("(the library)", e))?;
            macro_rules! symbol {
                ($name:literal) => {
                    *lib.get($name).map_err(|e| {
                        missing(&String::from_utf8_lossy(&$name[..$name.len() - 1]), e)
                    })?
                };
            }
            let api = Api {
                get_unique_id: symbol!(b"ncclGetUniqueId\0"),
                comm_init_rank: symbol!(b"ncclCommInitRank\0"),
                all_reduce: symbol!(b"ncclAllReduce\0"),
                broadcast: symbol!(b"ncclBroadcast\0"),
                all_gather: symbol!(b"ncclAllGather\0"),
                send: symbol!(b"ncclSend\0"),
                recv: symbol!(b"ncclRecv\0"),
                comm_destroy: symbol!(b"ncclCommDestroy\0"),
                error_string: symbol!(b"ncclGetErrorString\0"),
            };
            std::mem::forget(lib);
            Ok(api)
        }
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// `result` as an error saying what was being done, with NCCL's own words.
fn check(
    api: &Api,
    doing: impl FnOnce() -> String,
    result: ncclResult_t,
) -> Result<(), RuntimeError> {
    if result == ncclResult_t::ncclSuccess {
        return Ok(());
    }
    // SAFETY: NCCL returns a static, NUL-terminated string for any result.
    let why = unsafe { CStr::from_ptr((api.error_string)(result)) };
    Err(RuntimeError::Dist(DistError::Nccl(format!(
        "{}: {} ({result:?})",
        doing(),
        why.to_string_lossy()
    ))))
}

/// Which way a point-to-point transfer goes.
#[derive(Clone, Copy, Debug)]
enum Direction {
    Send,
    Receive,
}

/// How values combine over the ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    Sum,
    Mean,
}

/// This process's member of the run's NCCL communicator.
pub struct Communicator {
    api: &'static Api,
    comm: ncclComm_t,
    device: Arc<Device>,
    world: World,
    /// The stream all of this member's NCCL work is queued on.
    stream: Arc<CudaStream>,
    /// Marks the device's work that the next NCCL call waits for.
    queued: CudaEvent,
    /// Marks the NCCL work that the device's stream waits for.
    landed: CudaEvent,
}

// SAFETY: an NCCL communicator may be called from any thread, one call at a time (NCCL
// forbids only concurrent calls on one communicator). `Communicator` is not `Sync`, and
// only its `&self` methods call it, so calls never overlap.
unsafe impl Send for Communicator {}

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
        let api = api()?;
        device.bind()?;
        let mut id = ncclUniqueId {
            internal: [0; ID_BYTES],
        };
        if world.rank == 0 {
            // SAFETY: `id` is a valid ncclUniqueId for NCCL to write.
            let r = unsafe { (api.get_unique_id)(&mut id) };
            check(api, || "creating the run's NCCL id".into(), r)?;
        }
        let mine: Vec<u8> = id.internal.iter().map(|&c| c as u8).collect();
        let bytes = rendezvous::exchange(world, &mine, timeout)?;
        if bytes.len() != ID_BYTES {
            return Err(DistError::Rendezvous(format!(
                "rank 0 sent {} bytes where NCCL's id has {ID_BYTES}",
                bytes.len()
            ))
            .into());
        }
        for (c, &b) in id.internal.iter_mut().zip(&bytes) {
            *c = b as c_char;
        }
        let (rank, size) = (to_int(world.rank)?, to_int(world.size)?);
        let mut comm: ncclComm_t = std::ptr::null_mut();
        // SAFETY: `comm` receives the communicator; `id` is rank 0's, as NCCL requires of
        // every rank; the device's context is current (bound above).
        let r = unsafe { (api.comm_init_rank)(&mut comm, size, id, rank) };
        check(
            api,
            || format!("rank {rank} of {size} joining the NCCL communicator"),
            r,
        )?;
        let driver = |e| RuntimeError::driver("creating the communicator's stream", e);
        let stream = device.stream.fork().map_err(driver)?;
        let queued = device.ctx.new_event(None).map_err(driver)?;
        let landed = device.ctx.new_event(None).map_err(driver)?;
        Ok(Self {
            api,
            comm,
            device: device.clone(),
            world: world.clone(),
            stream,
            queued,
            landed,
        })
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// Replaces `t` (f32, on this communicator's device) with its sum or mean over the
    /// ranks, in place, in order with the work on the device's stream.
    pub fn all_reduce(&self, t: &DeviceTensor, op: Reduce) -> Result<(), RuntimeError> {
        self.reduce(t, op, Join::Now)
    }

    /// Starts replacing `t` with its reduction over the ranks, after the work queued on
    /// the device's stream so far, without making the device wait for it: the device
    /// computes on while the values travel. Until [`Communicator::catch_up`], nothing on
    /// the device's stream may read or write `t`, and `t`'s memory must stay `t`'s (a
    /// tensor that lives as long as the model, such as its gradient buffer).
    pub(crate) fn all_reduce_in_background(
        &self,
        t: &DeviceTensor,
        op: Reduce,
    ) -> Result<(), RuntimeError> {
        self.reduce(t, op, Join::Later)
    }

    /// Makes the device's stream wait for all the NCCL work queued so far (the reductions
    /// started in the background).
    pub(crate) fn catch_up(&self) -> Result<(), RuntimeError> {
        let driver = |e| RuntimeError::driver("waiting for NCCL's work", e);
        self.landed.record(&self.stream).map_err(driver)?;
        self.device.stream.wait(&self.landed).map_err(driver)
    }

    fn reduce(&self, t: &DeviceTensor, op: Reduce, join: Join) -> Result<(), RuntimeError> {
        let (doing, op) = match op {
            Reduce::Sum => ("summing", ncclRedOp_t::ncclSum),
            Reduce::Mean => ("averaging", ncclRedOp_t::ncclAvg),
        };
        self.collective(doing, t, join, |p, stream| {
            // SAFETY: `p` addresses `t`'s f32 values on this communicator's device
            // (checked), read and written in place on the communicator's stream, after
            // the kernels queued before (and, joined now, before those queued after; in
            // the background, the caller keeps `t` alive and untouched until it joins).
            unsafe {
                (self.api.all_reduce)(
                    p,
                    p,
                    t.len(),
                    ncclDataType_t::ncclFloat32,
                    op,
                    self.comm,
                    stream,
                )
            }
        })
    }

    /// Sends `t` (f32, on this communicator's device) to rank `peer`, which must
    /// [`Communicator::recv`] as many values; the device's later work waits until the
    /// peer has them.
    pub fn send(&self, t: &DeviceTensor, peer: usize) -> Result<(), RuntimeError> {
        self.point_to_point(Direction::Send, t, peer)
    }

    /// Receives into `t` (f32, on this communicator's device) what rank `peer`
    /// [`Communicator::send`]s, in order with the work on the device's stream.
    pub fn recv(&self, t: &DeviceTensor, peer: usize) -> Result<(), RuntimeError> {
        self.point_to_point(Direction::Receive, t, peer)
    }

    /// `count` new tensors of `n` f32 values each from rank `peer`, in the order it sends
    /// them (a neuron layer's states, say).
    pub fn recv_new(
        &self,
        count: usize,
        n: usize,
        peer: usize,
    ) -> Result<Vec<DeviceTensor>, RuntimeError> {
        (0..count)
            .map(|_| {
                let t = DeviceTensor::empty(&self.device, Dtype::F32, &[n])?;
                self.recv(&t, peer)?;
                Ok(t)
            })
            .collect()
    }

    /// NCCL's send or receive of `t` with rank `peer`, after checking both.
    fn point_to_point(
        &self,
        direction: Direction,
        t: &DeviceTensor,
        peer: usize,
    ) -> Result<(), RuntimeError> {
        let rank = self.peer(peer)?;
        let doing = match direction {
            Direction::Send => format!("sending to rank {peer}"),
            Direction::Receive => format!("receiving from rank {peer}"),
        };
        self.collective(&doing, t, Join::Now, |p, stream| {
            let (n, dtype, comm) = (t.len(), ncclDataType_t::ncclFloat32, self.comm);
            // SAFETY: `p` addresses `t`'s f32 values on this communicator's device
            // (checked): NCCL reads them (send) or writes them (receive) on the
            // communicator's stream, joined to the device's both ways, in order with the
            // kernels around.
            unsafe {
                match direction {
                    Direction::Send => (self.api.send)(p, n, dtype, rank, comm, stream),
                    Direction::Receive => (self.api.recv)(p, n, dtype, rank, comm, stream),
                }
            }
        })
    }

    /// Rank `peer` as NCCL names it: another rank of this run.
    fn peer(&self, peer: usize) -> Result<c_int, RuntimeError> {
        if peer >= self.world.size || peer == self.world.rank {
            return Err(RuntimeError::invalid(
                "point-to-point",
                format!(
                    "rank {} of {} has no peer {peer}",
                    self.world.rank, self.world.size
                ),
            ));
        }
        to_int(peer)
    }

    /// Replaces `t` (f32, on this communicator's device) with rank 0's `t`, in place.
    pub fn broadcast_from_rank0(&self, t: &DeviceTensor) -> Result<(), RuntimeError> {
        self.collective("broadcasting", t, Join::Now, |p, stream| {
            // SAFETY: as in `reduce`, joined now.
            unsafe {
                (self.api.broadcast)(
                    p,
                    p,
                    t.len(),
                    ncclDataType_t::ncclFloat32,
                    0,
                    self.comm,
                    stream,
                )
            }
        })
    }

    /// Writes every rank's `t` into `all`, rank by rank (`all` holds `t.len()` values per
    /// rank, f32, on this communicator's device).
    pub fn all_gather(&self, t: &DeviceTensor, all: &DeviceTensor) -> Result<(), RuntimeError> {
        if all.len() != t.len() * self.world.size {
            return Err(RuntimeError::invalid(
                "gathering",
                format!(
                    "{} values gathered from {} ranks need room for {}, not {}",
                    t.len(),
                    self.world.size,
                    t.len() * self.world.size,
                    all.len()
                ),
            ));
        }
        self.takes("gathering", all)?;
        self.collective("gathering", t, Join::Now, |p, stream| {
            // SAFETY: `p` addresses `t`'s f32 values and `all` has room for `t.len()` of
            // them per rank (both checked, on this communicator's device); NCCL reads `t`
            // and writes `all` on the communicator's stream, joined to the device's both
            // ways, in order with the kernels around.
            unsafe {
                (self.api.all_gather)(
                    p,
                    all.ptr() as *mut c_void,
                    t.len(),
                    ncclDataType_t::ncclFloat32,
                    self.comm,
                    stream,
                )
            }
        })
    }

    /// Checks that NCCL can take `t` here: f32, on this communicator's device.
    fn takes(&self, doing: &str, t: &DeviceTensor) -> Result<(), RuntimeError> {
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
        Ok(())
    }

    /// Runs `op` on `t`'s address and the communicator's stream, after the work queued
    /// on the device's stream so far, having checked that NCCL can take `t`; with
    /// [`Join::Now`], the device's later work waits for it.
    fn collective(
        &self,
        doing: &str,
        t: &DeviceTensor,
        join: Join,
        op: impl FnOnce(*mut c_void, cudaStream_t) -> ncclResult_t,
    ) -> Result<(), RuntimeError> {
        self.takes(doing, t)?;
        if t.is_empty() {
            return Ok(());
        }
        self.device.bind()?;
        let driver = |e| RuntimeError::driver("queueing NCCL's work after the device's", e);
        self.queued.record(&self.device.stream).map_err(driver)?;
        self.stream.wait(&self.queued).map_err(driver)?;
        let r = op(
            t.ptr() as *mut c_void,
            self.stream.cu_stream() as cudaStream_t,
        );
        check(
            self.api,
            || format!("{doing} {} values over {} ranks", t.len(), self.world.size),
            r,
        )?;
        match join {
            Join::Now => self.catch_up(),
            Join::Later => Ok(()),
        }
    }
}

/// When the device's stream waits for an NCCL call.
#[derive(Clone, Copy, Debug)]
enum Join {
    /// Before its next work: the call is one more launch in the device's order.
    Now,
    /// At [`Communicator::catch_up`].
    Later,
}

impl Drop for Communicator {
    fn drop(&mut self) {
        // Work still queued (the last step's reductions, which the device's stream may not
        // have waited for) finishes first: older NCCLs destroy a busy communicator.
        let _ = self.stream.synchronize();
        // SAFETY: `comm` came from ncclCommInitRank and is destroyed once, here, after its
        // work; a failure leaves nothing to do.
        unsafe {
            (self.api.comm_destroy)(self.comm);
        }
    }
}

fn to_int(n: usize) -> Result<c_int, RuntimeError> {
    c_int::try_from(n)
        .map_err(|_| DistError::Nccl(format!("{n} ranks are more than NCCL takes")).into())
}
