//! Storage dtypes: what tensors are stored as in memory (all arithmetic is in f32 on the GPU,
//! in the interpreter's own type on the CPU).

use std::fmt;

use crate::ir::SpikeKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    F64,
    F32,
    F16,
    BF16,
    /// Spikes only: 0 or 1 in a byte. (The runtime's hand-written kernels also use it for
    /// raw bytes: pixels, event counts, argmax indices.)
    U8,
    /// Signed (ternary) spikes only: -1, 0 or 1 in a signed byte.
    I8,
    /// Integers of the runtime's hand-written kernels (class labels); never neuron storage.
    U32,
    /// Integers of the runtime's hand-written kernels (dataset sample ids); never neuron
    /// storage.
    U64,
}

impl Dtype {
    /// The short name (`f32`, `bf16`, `u8`): in messages, and in generated helpers' names.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F64 => "f64",
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::BF16 => "bf16",
            Dtype::U8 => "u8",
            Dtype::I8 => "i8",
            Dtype::U32 => "u32",
            Dtype::U64 => "u64",
        }
    }

    pub fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::U64 => 8,
            Dtype::F32 | Dtype::U32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::U8 | Dtype::I8 => 1,
        }
    }

    /// Whether storing an f32 value and reading it back gives it back unchanged.
    pub fn holds_f32(self) -> bool {
        matches!(self, Dtype::F64 | Dtype::F32)
    }

    /// `x` as it reads back after being stored in this dtype.
    pub fn round(self, x: f64) -> f64 {
        match self {
            Dtype::F64 => x,
            Dtype::F32 => f64::from(x as f32),
            // Through f32, as the kernels store their f32 values (half's `from_f64` does not
            // always round to nearest: 0x47828006 as f32 gives bf16 0x4782, not 0x4783).
            Dtype::F16 => f64::from(half::f16::from_f32(x as f32)),
            Dtype::BF16 => f64::from(half::bf16::from_f32(x as f32)),
            Dtype::U8 => {
                if x >= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Dtype::I8 => f64::from(ternary(x as f32)),
            // `as` saturates: the nearest representable integer.
            Dtype::U32 => x.round() as u32 as f64,
            Dtype::U64 => x.round() as u64 as f64,
        }
    }
}

/// A ternary spike as the kernels store it in `i8` (`snn_st_i8`): the nearest of -1, 0, 1.
fn ternary(x: f32) -> i8 {
    if x >= 0.5 {
        1
    } else if x <= -0.5 {
        -1
    } else {
        0
    }
}

impl Dtype {
    /// `values` stored in this dtype, little-endian (what a kernel reads).
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(values.len() * self.size());
        for &v in values {
            match self {
                Dtype::F64 => out.extend_from_slice(&f64::from(v).to_le_bytes()),
                Dtype::F32 => out.extend_from_slice(&v.to_le_bytes()),
                Dtype::F16 => out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
                Dtype::BF16 => out.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
                Dtype::U8 => out.push(u8::from(v >= 0.5)),
                Dtype::I8 => out.extend_from_slice(&ternary(v).to_le_bytes()),
                Dtype::U32 => out.extend_from_slice(&(v.round() as u32).to_le_bytes()),
                Dtype::U64 => out.extend_from_slice(&(v.round() as u64).to_le_bytes()),
            }
        }
        out
    }

    /// The values of little-endian `bytes` stored in this dtype (a trailing partial element
    /// is ignored).
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks_exact(self.size())
            .map(|c| match self {
                Dtype::F64 => f64::from_le_bytes(c.try_into().unwrap_or_default()) as f32,
                Dtype::F32 => f32::from_le_bytes(c.try_into().unwrap_or_default()),
                Dtype::F16 => half::f16::from_le_bytes(c.try_into().unwrap_or_default()).to_f32(),
                Dtype::BF16 => half::bf16::from_le_bytes(c.try_into().unwrap_or_default()).to_f32(),
                Dtype::U8 => f32::from(c[0]),
                Dtype::I8 => f32::from(i8::from_le_bytes([c[0]])),
                Dtype::U32 => u32::from_le_bytes(c.try_into().unwrap_or_default()) as f32,
                Dtype::U64 => u64::from_le_bytes(c.try_into().unwrap_or_default()) as f32,
            })
            .collect()
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a layer's per-step tensors are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Storage {
    /// Inputs, real-valued outputs, and all gradients.
    pub io: Dtype,
    /// Spike outputs (exactly 0 or 1, or -1, 0 or 1 for ternary ones: any dtype holds
    /// them; `u8` stands for `i8` where they are ternary, see [`Storage::output`]).
    pub spikes: Dtype,
    /// Tensors saved by the forward pass for the backward pass.
    pub saves: Dtype,
}

impl Storage {
    /// Everything in f32.
    pub const F32: Storage = Storage {
        io: Dtype::F32,
        spikes: Dtype::F32,
        saves: Dtype::F32,
    };
    /// bf16 inputs, gradients and saves, u8 spikes (i8 for ternary ones): the narrow
    /// storage (half the memory traffic of f32, a quarter for spikes).
    pub const NARROW: Storage = Storage {
        io: Dtype::BF16,
        spikes: Dtype::U8,
        saves: Dtype::BF16,
    };
    /// Everything in f64 (CPU reference runs for gradient checks).
    pub const F64: Storage = Storage {
        io: Dtype::F64,
        spikes: Dtype::F64,
        saves: Dtype::F64,
    };

    /// The dtype an output of `kind` is stored in: `spikes` for a spike train (its signed
    /// twin `i8` for ternary spikes where `spikes` is `u8`), else `io`.
    pub fn output(&self, kind: SpikeKind) -> Dtype {
        match kind {
            SpikeKind::Binary => self.spikes,
            SpikeKind::Ternary if self.spikes == Dtype::U8 => Dtype::I8,
            SpikeKind::Ternary => self.spikes,
            SpikeKind::General => self.io,
        }
    }

    /// Checks that each dtype is allowed in its role.
    pub fn check(&self) -> Result<(), String> {
        let integer = |d: Dtype| matches!(d, Dtype::U32 | Dtype::U64);
        if integer(self.io) || integer(self.spikes) || integer(self.saves) {
            return Err(
                "u32 and u64 are not neuron storage; use f32, f16 or bf16 (u8 for spikes)".into(),
            );
        }
        if matches!(self.io, Dtype::U8 | Dtype::I8) {
            return Err(format!(
                "{} can only store spikes; use f32, f16 or bf16 for inputs and gradients",
                self.io
            ));
        }
        if matches!(self.saves, Dtype::U8 | Dtype::I8) {
            return Err("saved tensors hold real values; store them as f32, bf16 or f16".into());
        }
        Ok(())
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage::F32
    }
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "io {}, spikes {}, saves {}",
            self.io, self.spikes, self.saves
        )
    }
}
