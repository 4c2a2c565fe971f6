//! The interpreter's data: time-major sequences, parameter values and the element layout.

use crate::ir::{NeuronIr, ParamShape};
use crate::layer::Layout;

use super::{Real, RunError};

/// A time-major `[steps, n]` sequence, contiguous: element `i` at step `t` is
/// `data[t * n + i]`, the layout the kernels use.
#[derive(Clone, Debug, PartialEq)]
pub struct Seq<T> {
    pub steps: usize,
    pub n: usize,
    pub data: Vec<T>,
}

impl<T: Real> Seq<T> {
    pub fn zeros(steps: usize, n: usize) -> Self {
        Self {
            steps,
            n,
            data: vec![T::from_f64(0.0); steps * n],
        }
    }

    /// Wraps `data`, checking its length.
    pub fn new(steps: usize, n: usize, data: Vec<T>) -> Result<Self, RunError> {
        if data.len() != steps * n {
            return Err(RunError::Length {
                what: "sequence data".into(),
                expected: steps * n,
                got: data.len(),
            });
        }
        Ok(Self { steps, n, data })
    }

    /// Steps `from..to`.
    pub fn steps(&self, from: usize, to: usize) -> Self {
        Self {
            steps: to - from,
            n: self.n,
            data: self.data[from * self.n..to * self.n].to_vec(),
        }
    }

    /// Joins sequences along time.
    pub fn concat(parts: &[Seq<T>]) -> Self {
        let n = parts.first().map_or(0, |p| p.n);
        Self {
            steps: parts.iter().map(|p| p.steps).sum(),
            n,
            data: parts.iter().flat_map(|p| p.data.iter().copied()).collect(),
        }
    }
}

/// The values of a neuron's parameters for one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Params<T> {
    pub layout: Layout,
    names: Vec<String>,
    shapes: Vec<ParamShape>,
    values: Vec<Vec<T>>,
}

impl<T: Real> Params<T> {
    /// Every parameter at its default.
    pub fn defaults(ir: &NeuronIr, layout: Layout) -> Self {
        Self {
            layout,
            names: ir.params.iter().map(|p| p.name.clone()).collect(),
            shapes: ir.params.iter().map(|p| p.shape).collect(),
            values: ir
                .params
                .iter()
                .map(|p| vec![T::from_f64(p.default); layout.len(p.shape)])
                .collect(),
        }
    }

    /// Sets a parameter's values; their count must match its shape.
    pub fn set(&mut self, name: &str, values: Vec<T>) -> Result<(), RunError> {
        let Some(p) = self.names.iter().position(|n| n == name) else {
            return Err(RunError::UnknownParam {
                name: name.into(),
                known: self.names.join(", "),
            });
        };
        let expected = self.layout.len(self.shapes[p]);
        if values.len() != expected {
            return Err(RunError::ParamLength {
                param: name.into(),
                shape: self.shapes[p].to_string(),
                expected,
                got: values.len(),
            });
        }
        self.values[p] = values;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&[T]> {
        let p = self.names.iter().position(|n| n == name)?;
        Some(&self.values[p])
    }

    /// Parameter `p`'s value for element `i`.
    pub(crate) fn at(&self, p: usize, i: usize) -> T {
        self.values[p][self.layout.index(self.shapes[p], i)]
    }

    pub(crate) fn check(&self, ir: &NeuronIr) -> Result<(), RunError> {
        if self.names.len() != ir.params.len()
            || (self.names.iter().zip(&self.shapes))
                .zip(&ir.params)
                .any(|((n, s), p)| *n != p.name || *s != p.shape)
        {
            return Err(RunError::ParamsOfOtherNeuron {
                neuron: ir.name.clone(),
            });
        }
        for (p, v) in self.values.iter().enumerate() {
            let expected = self.layout.len(self.shapes[p]);
            if v.len() != expected {
                return Err(RunError::ParamLength {
                    param: self.names[p].clone(),
                    shape: self.shapes[p].to_string(),
                    expected,
                    got: v.len(),
                });
            }
        }
        Ok(())
    }
}
