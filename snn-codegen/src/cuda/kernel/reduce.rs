//! How the backward sums learnable params' gradients over elements ([`Reduction`]):
//! atomic (a block total per scalar param, atomics for the others) or deterministic
//! (per-element partials that `snn_reduce_param_grad` sums in a fixed order).
//!
//! [`Reduction`]: crate::cuda::Reduction

use crate::dtype::Dtype;
use crate::ir::ParamShape;

use super::super::signature::{ArgRole, ArgType, KernelArg, KernelSignature};
use super::super::writer::Writer;
use super::backward::Backward;
use super::lanes::lane;
use super::{layout_args, ptr_arg, value_arg};

impl Backward<'_, '_> {
    /// `grad_{param}` for each learnable param.
    pub(super) fn param_grad_args(&self) -> impl Iterator<Item = KernelArg> + '_ {
        self.learnable.iter().map(|&p| {
            let name = format!("grad_{}", self.g.param(p));
            ptr_arg(name, ArgRole::ParamGrad(p), Dtype::F32, true)
        })
    }

    /// The learnable scalar params summed over the block first (atomic reduction only).
    fn block_totals(&self) -> impl Iterator<Item = &str> + '_ {
        let params = &self.g.c.neuron.params;
        let atomic = self.g.atomic();
        (self.learnable.iter())
            .filter(move |&&p| atomic && params[p].shape == ParamShape::Scalar)
            .map(|&p| self.g.param(p))
    }

    pub(super) fn declare_totals(&self, w: &mut Writer) {
        for name in self.block_totals() {
            w.line(format!("float tot_{name} = 0.0f;"));
        }
    }

    /// Adds element `i`'s accumulated gradients (in a per-lane body): into the block
    /// totals, by atomics, or as the element's partials.
    pub(super) fn add_param_grads(&self, w: &mut Writer, vec: bool) {
        let (g, atomic) = (self.g, self.g.atomic());
        for &p in &self.learnable {
            let name = g.param(p);
            let acc = lane(&format!("acc_{name}"), vec);
            match (atomic, g.c.neuron.params[p].shape) {
                (true, ParamShape::Scalar) => w.line(format!("tot_{name} += {acc};")),
                (true, _) => w.line(format!(
                    "snn_atomic_add(grad_{name} + {}, {acc});",
                    g.param_index(p, "i")
                )),
                (false, _) => w.line(format!("grad_{name}[i] = {acc};")),
            }
        }
    }

    /// Adds the block totals to the gradients (every thread of the block takes part).
    pub(super) fn flush_totals(&self, w: &mut Writer) {
        for name in self.block_totals() {
            w.line(format!("snn_block_sum_atomic(tot_{name}, grad_{name});"));
        }
    }
}

/// The signature of `snn_reduce_param_grad` (the prelude's `REDUCE`).
pub(super) fn signature() -> KernelSignature {
    let mut args = vec![
        ptr_arg("partials", ArgRole::Partials, Dtype::F32, false),
        ptr_arg("reduced", ArgRole::Reduced, Dtype::F32, true),
    ];
    args.extend(layout_args());
    args.push(value_arg("shape", ArgRole::Shape, ArgType::I32));
    KernelSignature {
        name: "snn_reduce_param_grad".into(),
        args,
    }
}
