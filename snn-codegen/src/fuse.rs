//! Fusing the layers before a neuron into its step, so that one generated kernel computes
//! them and their values never travel through memory.
//!
//! [`batch_norm_input`] gives a neuron whose input is batch-norm's *input* (a
//! convolution's output): each step first computes `y = bn_scale * (x - bn_mean) +
//! bn_shift` per channel (optionally `+ residual`, a second input), then runs the neuron on
//! `y`. The backward pass derived from it yields `scale * dL/dy` for `x`, `dL/dy` for the
//! residual, and the per-channel sums `sum dL/dy * (x - mean)` (gradient of `bn_scale`) and
//! `sum dL/dy` (of `bn_shift`): exactly what batch-norm's backward needs to finish, so the
//! normalized activations are never written in either direction.

use crate::error::IrError;
use crate::ir::{Binary, Graph, Leaf, NeuronIr, Op, ParamShape, ParamSpec};

/// The names of the parameters the fused prologue adds (per channel).
pub const BN_MEAN: &str = "bn_mean";
pub const BN_SCALE: &str = "bn_scale";
pub const BN_SHIFT: &str = "bn_shift";
/// The name of the second input of a fused residual add.
pub const RESIDUAL: &str = "residual";

/// `ir` with batch-norm's affine map (and a residual add) fused before its input; see the
/// module docs. `ir` must have exactly one input; its params keep their indices, and
/// `bn_mean` (fixed), `bn_scale` and `bn_shift` (learnable) follow them.
pub fn batch_norm_input(ir: &NeuronIr, residual: bool) -> Result<NeuronIr, IrError> {
    ir.validate()?;
    let clash = |name: &str| {
        ir.params.iter().any(|p| p.name == name)
            || ir.inputs.iter().any(|i| i == name)
            || ir.states.iter().any(|s| s.name == name)
    };
    if ir.inputs.len() != 1 {
        return Err(IrError::Fusion {
            neuron: ir.name.clone(),
            problem: format!("it has {} inputs; fusion needs one", ir.inputs.len()),
        });
    }
    if let Some(name) = [BN_MEAN, BN_SCALE, BN_SHIFT, RESIDUAL]
        .into_iter()
        .find(|n| clash(n))
    {
        return Err(IrError::Fusion {
            neuron: ir.name.clone(),
            problem: format!("fusion adds `{name}`, which the neuron already uses; rename it"),
        });
    }
    let mut out = ir.clone();
    out.name = format!("{}_bn{}", ir.name, if residual { "_add" } else { "" });
    let first = ir.params.len() as u32;
    for (name, learnable, default) in [
        (BN_MEAN, false, 0.0),
        (BN_SCALE, true, 1.0),
        (BN_SHIFT, true, 0.0),
    ] {
        out.params.push(ParamSpec {
            name: name.into(),
            shape: ParamShape::PerChannel,
            learnable,
            default,
        });
    }
    if residual {
        out.inputs.push(RESIDUAL.into());
    }
    let mut g = Graph::new();
    let x = g.leaf(Leaf::Input(0));
    let [mean, scale, shift] = [0, 1, 2].map(|k| g.leaf(Leaf::Param(first + k)));
    let centered = g.binary(Binary::Sub, x, mean);
    let scaled = g.binary(Binary::Mul, scale, centered);
    let mut y = g.binary(Binary::Add, scaled, shift);
    if residual {
        let r = g.leaf(Leaf::Input(1));
        y = g.binary(Binary::Add, y, r);
    }
    let input_name = ir.inputs[0].clone();
    g.set_name(y, Some(format!("{input_name}_bn")));
    let (_, sinks) = g.inline(&ir.graph, &mut |g, leaf| match leaf {
        Leaf::Input(0) => y,
        other => g.leaf(other),
    });
    for (sink, value) in sinks {
        g.add(Op::Sink(sink), &[value]);
    }
    out.graph = g;
    out.validate()?;
    Ok(out)
}
