//! The model's tensors on the host, by their PyTorch names: parameters, gradients, and
//! flat buffers of the same layout (optimizer state) both ways.

use super::*;

impl GpuModel {
    /// The trained tensors of a flat buffer in this model's layout (parameters, gradients,
    /// optimizer state), as a named set.
    pub fn weights_to_host(&self, flat: &DeviceTensor) -> Result<ParamSet<f32>, RuntimeError> {
        if flat.len() != self.params.len() {
            return Err(RuntimeError::invalid(
                "reading weights",
                format!(
                    "a flat buffer of {} values; this model's has {}",
                    flat.len(),
                    self.params.len()
                ),
            ));
        }
        let all = flat.to_f32()?;
        let mut set = ParamSet::new();
        for s in &self.slots {
            let len = s.len();
            set.push(Tensor {
                name: s.name.clone(),
                shape: s.shape.clone(),
                role: Role::Weight,
                data: all[s.offset..s.offset + len].to_vec(),
            })?;
        }
        Ok(set)
    }

    /// Writes the trained tensors of `set` (every one of this model's, by name) into a
    /// flat buffer of this model's layout.
    pub fn weights_from_host(
        &self,
        set: &ParamSet<f32>,
        flat: &DeviceTensor,
    ) -> Result<(), RuntimeError> {
        let mut all = vec![0f32; self.params.len()];
        for s in &self.slots {
            let t = set.get(&s.name).ok_or_else(|| {
                RuntimeError::invalid("loading weights", format!("no tensor `{}`", s.name))
            })?;
            if t.shape != s.shape {
                return Err(RuntimeError::invalid(
                    "loading weights",
                    format!(
                        "tensor `{}` is {:?}; the model needs {:?}",
                        s.name, t.shape, s.shape
                    ),
                ));
            }
            all[s.offset..s.offset + t.data.len()].copy_from_slice(&t.data);
        }
        if flat.len() != all.len() || flat.dtype != Dtype::F32 {
            return Err(RuntimeError::invalid(
                "loading weights",
                format!(
                    "a flat buffer of {} {} values; this model's has {} f32",
                    flat.len(),
                    flat.dtype,
                    all.len()
                ),
            ));
        }
        flat.write_bytes(&Dtype::F32.encode(&all))
    }

    /// Every tensor of the network (weights, batch-norm statistics and counters) on the
    /// host, named as in PyTorch.
    pub fn to_host(&self) -> Result<ParamSet<f32>, RuntimeError> {
        self.collect(&self.params, true)
    }

    /// The gradients on the host, as a set with the network's names (buffers zero).
    pub fn grads_to_host(&self) -> Result<ParamSet<f32>, RuntimeError> {
        self.collect(&self.grads, false)
    }

    fn collect(&self, flat: &DeviceTensor, buffers: bool) -> Result<ParamSet<f32>, RuntimeError> {
        let all = flat.to_f32()?;
        let mut set = ParamSet::new();
        for info in self.net.params() {
            let len: usize = info.shape.iter().product();
            let data = match info.role {
                Role::Weight => {
                    let s = self
                        .slots
                        .iter()
                        .find(|s| s.name == info.name)
                        .ok_or_else(|| {
                            RuntimeError::Internal(format!("no slot for `{}`", info.name))
                        })?;
                    all[s.offset..s.offset + len].to_vec()
                }
                _ if !buffers => vec![0.0; len],
                role => {
                    let field = &info.name[self.net.node(info.node).name.len() + 1..];
                    match (&self.layers[info.node], role, field) {
                        (Layer::BatchNorm { running_mean, .. }, Role::Buffer, "running_mean") => {
                            running_mean.to_f32()?
                        }
                        (Layer::BatchNorm { running_var, .. }, Role::Buffer, "running_var") => {
                            running_var.to_f32()?
                        }
                        (Layer::BatchNorm { batches, .. }, Role::Counter, _) => {
                            vec![*batches as f32]
                        }
                        _ => {
                            return Err(RuntimeError::Internal(format!(
                                "no storage for `{}`",
                                info.name
                            )));
                        }
                    }
                }
            };
            set.push(Tensor {
                name: info.name,
                shape: info.shape,
                role: info.role,
                data,
            })?;
        }
        Ok(set)
    }
}
