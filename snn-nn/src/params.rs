//! Named host tensors: a network's weights and buffers, their gradients, optimizer state.
//! Names are those of the equivalent PyTorch model's `state_dict` (`layer1.0.conv1.weight`).

use std::collections::BTreeMap;

use crate::error::NnError;
use crate::float::Float;

/// What a named tensor is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Trained by the optimizer.
    Weight,
    /// State that is not trained (batch-norm running mean and variance).
    Buffer,
    /// An integer count (batch-norm's `num_batches_tracked`, an `int64` in PyTorch).
    Counter,
}

/// One named tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<T> {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: Role,
    pub data: Vec<T>,
}

impl<T: Float> Tensor<T> {
    /// A tensor of zeros.
    pub fn zeros(name: impl Into<String>, shape: &[usize], role: Role) -> Self {
        Self {
            name: name.into(),
            shape: shape.to_vec(),
            role,
            data: vec![T::default(); shape.iter().product()],
        }
    }
}

/// An ordered set of named tensors (the order is the network's, and fixed).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ParamSet<T> {
    tensors: Vec<Tensor<T>>,
    index: BTreeMap<String, usize>,
}

impl<T: Float> ParamSet<T> {
    pub fn new() -> Self {
        Self {
            tensors: Vec::new(),
            index: BTreeMap::new(),
        }
    }

    /// Adds a tensor; names must be unique.
    pub fn push(&mut self, tensor: Tensor<T>) -> Result<(), NnError> {
        if tensor.data.len() != tensor.shape.iter().product::<usize>() {
            return Err(NnError::shape(format!(
                "tensor `{}` has {} values for shape {:?}",
                tensor.name,
                tensor.data.len(),
                tensor.shape
            )));
        }
        if self.index.contains_key(&tensor.name) {
            return Err(NnError::Graph(format!(
                "two tensors are named `{}`",
                tensor.name
            )));
        }
        self.index.insert(tensor.name.clone(), self.tensors.len());
        self.tensors.push(tensor);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Tensor<T>> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Tensor<T>> {
        self.index.get(name).map(|&i| &mut self.tensors[i])
    }

    /// The values of tensor `name`, or an error naming it.
    pub fn data(&self, name: &str) -> Result<&[T], NnError> {
        self.get(name)
            .map(|t| &t.data[..])
            .ok_or_else(|| NnError::Graph(format!("no tensor named `{name}`")))
    }

    /// The position of tensor `name` in the set's order.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Tensor<T>> {
        self.tensors.iter()
    }

    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Tensor<T>> {
        self.tensors.iter_mut()
    }

    /// The trained tensors, in order.
    pub fn weights(&self) -> impl Iterator<Item = &Tensor<T>> {
        self.tensors.iter().filter(|t| t.role == Role::Weight)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The same names, shapes and roles, with zeros (gradients, optimizer moments).
    pub fn zeros_like(&self) -> Self {
        let mut out = Self::new();
        for t in &self.tensors {
            out.index.insert(t.name.clone(), out.tensors.len());
            out.tensors
                .push(Tensor::zeros(t.name.clone(), &t.shape, t.role));
        }
        out
    }

    /// Converted to another float type (f32 parameters checked in f64, and back).
    pub fn cast<U: Float>(&self) -> ParamSet<U> {
        let mut out = ParamSet::new();
        for t in &self.tensors {
            out.index.insert(t.name.clone(), out.tensors.len());
            out.tensors.push(Tensor {
                name: t.name.clone(),
                shape: t.shape.clone(),
                role: t.role,
                data: t.data.iter().map(|x| U::from_f64(x.value())).collect(),
            });
        }
        out
    }
}

impl<'a, T> IntoIterator for &'a ParamSet<T> {
    type Item = &'a Tensor<T>;
    type IntoIter = std::slice::Iter<'a, Tensor<T>>;
    fn into_iter(self) -> Self::IntoIter {
        self.tensors.iter()
    }
}
