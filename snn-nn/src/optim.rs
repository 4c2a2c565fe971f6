//! Optimizers with PyTorch's semantics (`torch.optim.SGD`, `Adam`, `AdamW`, with their
//! defaults), the cosine learning-rate schedule, and gradient-norm clipping, on the CPU.
//!
//! The update formulas are written exactly as PyTorch's single-tensor implementations
//! write them (same operations in the same order, scalars folded in `f64` on the host and
//! rounded once), so that the GPU kernels in `snn-runtime` can do the same arithmetic and
//! agree with this reference to rounding.

use crate::error::NnError;
use crate::float::Float;
use crate::params::{ParamSet, Role};

/// An optimizer and its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// `torch.optim.SGD`.
    Sgd {
        lr: f64,
        momentum: f64,
        dampening: f64,
        weight_decay: f64,
        nesterov: bool,
    },
    /// `torch.optim.Adam` (L2 penalty added to the gradient).
    Adam {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
    /// `torch.optim.AdamW` (decoupled weight decay).
    AdamW {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
}

impl Optimizer {
    /// Adam with PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, no weight decay.
    pub fn adam(lr: f64) -> Self {
        Optimizer::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }

    /// AdamW with PyTorch's defaults: betas (0.9, 0.999), eps 1e-8 (PyTorch's default
    /// weight decay is 1e-2).
    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        Optimizer::AdamW {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }
    }

    /// SGD with PyTorch's defaults: no dampening, no weight decay, no Nesterov.
    pub fn sgd(lr: f64, momentum: f64) -> Self {
        Optimizer::Sgd {
            lr,
            momentum,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }

    /// The base learning rate (a schedule may scale it per step).
    pub fn lr(&self) -> f64 {
        match *self {
            Optimizer::Sgd { lr, .. }
            | Optimizer::Adam { lr, .. }
            | Optimizer::AdamW { lr, .. } => lr,
        }
    }

    /// The name PyTorch gives the optimizer's class, lower-cased (`sgd`, `adam`, `adamw`).
    pub fn kind(&self) -> &'static str {
        match self {
            Optimizer::Sgd { .. } => "sgd",
            Optimizer::Adam { .. } => "adam",
            Optimizer::AdamW { .. } => "adamw",
        }
    }

    /// Checks the hyper-parameters as PyTorch's constructors do (and that they are finite).
    pub fn validate(&self) -> Result<(), NnError> {
        let bad = |what: &str, value: f64, need: &str| {
            Err(NnError::Config(format!(
                "{} {what} = {value} is invalid: it must be {need}",
                self.kind()
            )))
        };
        check_lr(self.kind(), self.lr())?;
        if let Optimizer::Sgd {
            momentum,
            dampening,
            nesterov,
            ..
        } = *self
        {
            if !(momentum.is_finite() && momentum >= 0.0) {
                return bad("momentum", momentum, "finite and >= 0");
            }
            if !dampening.is_finite() {
                return bad("dampening", dampening, "finite");
            }
            if nesterov && (momentum <= 0.0 || dampening != 0.0) {
                return Err(NnError::Config(format!(
                    "sgd with nesterov = true needs momentum > 0 and dampening = 0 (got momentum = {momentum}, dampening = {dampening})"
                )));
            }
        } else {
            let Adam {
                beta1, beta2, eps, ..
            } = self.adam_family();
            for (what, beta) in [("beta1", beta1), ("beta2", beta2)] {
                if !(0.0..1.0).contains(&beta) {
                    return bad(what, beta, "in [0, 1)");
                }
            }
            if !(eps.is_finite() && eps >= 0.0) {
                return bad("eps", eps, "finite and >= 0");
            }
        }
        let weight_decay = self.weight_decay();
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            return bad("weight_decay", weight_decay, "finite and >= 0");
        }
        Ok(())
    }

    /// The weight decay (an L2 penalty for SGD and Adam, decoupled for AdamW).
    pub fn weight_decay(&self) -> f64 {
        match *self {
            Optimizer::Sgd { weight_decay, .. }
            | Optimizer::Adam { weight_decay, .. }
            | Optimizer::AdamW { weight_decay, .. } => weight_decay,
        }
    }

    /// The names of the per-weight state tensors, as in PyTorch's `optimizer.state_dict()`
    /// (SGD without momentum keeps none).
    pub fn state_names(&self) -> &'static [&'static str] {
        match *self {
            Optimizer::Sgd { momentum: 0.0, .. } => &[],
            Optimizer::Sgd { .. } => &["momentum_buffer"],
            Optimizer::Adam { .. } | Optimizer::AdamW { .. } => &["exp_avg", "exp_avg_sq"],
        }
    }

    /// Checks a step before anything changes: the hyper-parameters ([`Optimizer::validate`]),
    /// the step's learning rate `lr` (a schedule's, not only the base rate), and that the
    /// state holds `buffers` buffers, one per [state name](Optimizer::state_names).
    pub fn check_step(&self, lr: f64, buffers: usize) -> Result<(), NnError> {
        self.validate()?;
        check_lr(self.kind(), lr)?;
        let names = self.state_names();
        if buffers != names.len() {
            return Err(NnError::Config(format!(
                "{} keeps {} state tensors per weight ({names:?}) but the state has {buffers}: create the state for this optimizer",
                self.kind(),
                names.len()
            )));
        }
        Ok(())
    }

    /// The per-step scalars of the update at learning rate `lr` and 1-based step `step`,
    /// folded in `f64` as PyTorch folds them in Python floats: the CPU step and the GPU
    /// kernels both use exactly these (rounded once to the compute type).
    pub fn scalars(&self, lr: f64, step: u64) -> StepScalars {
        match *self {
            Optimizer::Sgd {
                momentum,
                dampening,
                weight_decay,
                nesterov,
                ..
            } => StepScalars::Sgd(SgdScalars {
                lr,
                weight_decay,
                momentum,
                one_minus_dampening: 1.0 - dampening,
                first: step <= 1,
                nesterov,
            }),
            Optimizer::Adam { .. } | Optimizer::AdamW { .. } => {
                let Adam {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                    decoupled,
                } = self.adam_family();
                let t = step as f64;
                let bias_correction1 = 1.0 - beta1.powf(t);
                let bias_correction2 = 1.0 - beta2.powf(t);
                StepScalars::Adam(AdamScalars {
                    decay: if decoupled {
                        1.0 - lr * weight_decay
                    } else {
                        1.0
                    },
                    grad_weight_decay: if decoupled { 0.0 } else { weight_decay },
                    one_minus_beta1: 1.0 - beta1,
                    beta2,
                    one_minus_beta2: 1.0 - beta2,
                    step_size: lr / bias_correction1,
                    bias_correction2_sqrt: bias_correction2.sqrt(),
                    eps,
                })
            }
        }
    }
}

/// The hyper-parameters Adam and AdamW share.
pub(crate) struct Adam {
    pub(crate) beta1: f64,
    pub(crate) beta2: f64,
    pub(crate) eps: f64,
    pub(crate) weight_decay: f64,
    /// AdamW's decay of the weights, instead of Adam's L2 penalty on the gradient.
    pub(crate) decoupled: bool,
}

impl Optimizer {
    /// The Adam hyper-parameters of Adam and AdamW (zeros for SGD, which has none).
    pub(crate) fn adam_family(&self) -> Adam {
        match *self {
            Optimizer::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                ..
            }
            | Optimizer::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
                ..
            } => Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                decoupled: matches!(self, Optimizer::AdamW { .. }),
            },
            Optimizer::Sgd { .. } => Adam {
                beta1: 0.0,
                beta2: 0.0,
                eps: 0.0,
                weight_decay: 0.0,
                decoupled: false,
            },
        }
    }
}

fn check_lr(kind: &str, lr: f64) -> Result<(), NnError> {
    if lr.is_finite() && lr >= 0.0 {
        Ok(())
    } else {
        Err(NnError::Config(format!(
            "{kind} learning rate {lr} is invalid: it must be finite and >= 0"
        )))
    }
}

/// The scalars of one optimizer step (see [`Optimizer::scalars`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StepScalars {
    Sgd(SgdScalars),
    Adam(AdamScalars),
}

/// `g += weight_decay * p`; `buf = first ? g : momentum * buf + one_minus_dampening * g`;
/// `g = nesterov ? g + momentum * buf : buf` (momentum > 0 only); `p -= lr * g`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdScalars {
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub one_minus_dampening: f64,
    pub first: bool,
    pub nesterov: bool,
}

/// `p *= decay`; `g += grad_weight_decay * p`; `m = lerp(m, g, one_minus_beta1)`; `v =
/// beta2 * v + one_minus_beta2 * g * g`; `p -= step_size * m / (sqrt(v) /
/// bias_correction2_sqrt + eps)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamScalars {
    pub decay: f64,
    pub grad_weight_decay: f64,
    pub one_minus_beta1: f64,
    pub beta2: f64,
    pub one_minus_beta2: f64,
    pub step_size: f64,
    pub bias_correction2_sqrt: f64,
    pub eps: f64,
}

/// `torch.lerp(start, end, weight)` as PyTorch computes it (the form depends on the weight,
/// for accuracy near both ends).
pub fn lerp<T: Float>(start: T, end: T, weight: T) -> T {
    if weight.abs() < T::from_f64(0.5) {
        start + weight * (end - start)
    } else {
        end - (end - start) * (T::from_f64(1.0) - weight)
    }
}

/// Cosine annealing as `torch.optim.lr_scheduler.CosineAnnealingLR`'s closed form
/// (`eta_min = min_lr`, `T_max = total_steps - warmup_steps`), after an optional linear
/// warm-up from 0 (as `transformers.get_cosine_schedule_with_warmup`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineSchedule {
    pub base_lr: f64,
    pub min_lr: f64,
    pub total_steps: u64,
    pub warmup_steps: u64,
}

impl CosineSchedule {
    /// The learning rate of 0-based step `step`: `base_lr * step / warmup_steps` during the
    /// warm-up, then `min_lr + (base_lr - min_lr) * (1 + cos(pi * s / T_max)) / 2` with `s`
    /// the steps since the warm-up, and `min_lr` from `total_steps` on (the closed form
    /// would rise again; training past the end keeps the floor instead).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * step as f64 / self.warmup_steps as f64;
        }
        let t_max = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / t_max as f64).min(1.0);
        self.min_lr
            + (self.base_lr - self.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos()) / 2.0
    }

    /// Checks that the rates are finite with `0 <= min_lr <= base_lr`, and that the warm-up
    /// ends before the schedule does.
    pub fn validate(&self) -> Result<(), NnError> {
        if !(self.base_lr.is_finite()
            && self.min_lr.is_finite()
            && 0.0 <= self.min_lr
            && self.min_lr <= self.base_lr)
        {
            return Err(NnError::Config(format!(
                "cosine schedule from {} to {} is invalid: the rates must be finite with 0 <= min_lr <= base_lr",
                self.base_lr, self.min_lr
            )));
        }
        if self.warmup_steps >= self.total_steps {
            return Err(NnError::Config(format!(
                "cosine schedule with {} warm-up steps out of {} total: the warm-up must be shorter than the schedule",
                self.warmup_steps, self.total_steps
            )));
        }
        Ok(())
    }
}

/// The optimizer's state: one [`ParamSet`] per [state name](Optimizer::state_names), holding
/// a tensor for each weight (same name and shape), and the number of steps taken.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState<T> {
    pub step: u64,
    pub buffers: Vec<ParamSet<T>>,
}

impl<T: Float> OptimizerState<T> {
    /// Zero state for the weights of `params` (its buffers and counters are not trained, so
    /// they get none), as before PyTorch's first step.
    pub fn new(opt: &Optimizer, params: &ParamSet<T>) -> Self {
        let mut weights = ParamSet::new();
        for t in params.weights() {
            // Names are unique in `params`, so pushing cannot fail; zeros have the
            // right length.
            let _ = weights.push(crate::params::Tensor::zeros(
                t.name.clone(),
                &t.shape,
                Role::Weight,
            ));
        }
        Self {
            step: 0,
            buffers: vec![weights; opt.state_names().len()],
        }
    }
}

/// One optimizer step at learning rate `lr` (the schedule's; `opt.lr()` is the base):
/// increments `state.step`, then updates every [`Role::Weight`] tensor of `params` from the
/// tensor of the same name in `grads`. Everything is checked before anything changes.
pub fn step<T: Float>(
    opt: &Optimizer,
    lr: f64,
    state: &mut OptimizerState<T>,
    params: &mut ParamSet<T>,
    grads: &ParamSet<T>,
) -> Result<(), NnError> {
    opt.check_step(lr, state.buffers.len())?;
    let names = opt.state_names();
    for w in params.weights() {
        let grad = grads.get(&w.name).ok_or_else(|| {
            NnError::shape(format!(
                "no gradient for weight `{}`: the gradients must have the parameters' names",
                w.name
            ))
        })?;
        if grad.shape != w.shape {
            return Err(NnError::shape(format!(
                "the gradient of `{}` has shape {:?}, the weight {:?}",
                w.name, grad.shape, w.shape
            )));
        }
        for (set, name) in state.buffers.iter().zip(names) {
            match set.get(&w.name) {
                Some(b) if b.shape == w.shape => {}
                Some(b) => {
                    return Err(NnError::shape(format!(
                        "optimizer state `{name}` of `{}` has shape {:?}, the weight {:?}",
                        w.name, b.shape, w.shape
                    )));
                }
                None => {
                    return Err(NnError::shape(format!(
                        "no optimizer state `{name}` for weight `{}`: create the state with OptimizerState::new for these parameters",
                        w.name
                    )));
                }
            }
        }
    }
    state.step += 1;
    let scalars = opt.scalars(lr, state.step);
    let buffers = &mut state.buffers;
    for w in params.iter_mut().filter(|t| t.role == Role::Weight) {
        let g = grads.data(&w.name)?;
        let mut bufs = buffers.iter_mut().filter_map(|set| set.get_mut(&w.name));
        match &scalars {
            StepScalars::Sgd(s) => {
                let buf = bufs.next().map(|b| &mut b.data[..]);
                sgd(s, &mut w.data, g, buf);
            }
            StepScalars::Adam(s) => {
                if let (Some(m), Some(v)) = (bufs.next(), bufs.next()) {
                    adam(s, &mut w.data, g, &mut m.data, &mut v.data);
                }
            }
        }
    }
    Ok(())
}

fn sgd<T: Float>(s: &SgdScalars, p: &mut [T], g: &[T], mut buf: Option<&mut [T]>) {
    let (lr, wd, mom, omd) = (
        T::from_f64(s.lr),
        T::from_f64(s.weight_decay),
        T::from_f64(s.momentum),
        T::from_f64(s.one_minus_dampening),
    );
    for i in 0..p.len() {
        let mut grad = g[i];
        if s.weight_decay != 0.0 {
            grad += wd * p[i];
        }
        if let Some(buf) = buf.as_deref_mut() {
            buf[i] = if s.first {
                grad
            } else {
                buf[i] * mom + omd * grad
            };
            grad = if s.nesterov {
                grad + mom * buf[i]
            } else {
                buf[i]
            };
        }
        p[i] -= lr * grad;
    }
}

fn adam<T: Float>(s: &AdamScalars, p: &mut [T], g: &[T], m: &mut [T], v: &mut [T]) {
    let c = T::from_f64;
    let (decay, wd, w1, b2, w2) = (
        c(s.decay),
        c(s.grad_weight_decay),
        c(s.one_minus_beta1),
        c(s.beta2),
        c(s.one_minus_beta2),
    );
    let (step_size, bc2_sqrt, eps) = (c(s.step_size), c(s.bias_correction2_sqrt), c(s.eps));
    for i in 0..p.len() {
        if s.decay != 1.0 {
            p[i] *= decay;
        }
        let mut grad = g[i];
        if s.grad_weight_decay != 0.0 {
            grad += wd * p[i];
        }
        m[i] = lerp(m[i], grad, w1);
        v[i] = v[i] * b2 + w2 * (grad * grad);
        let denom = v[i].sqrt() / bc2_sqrt + eps;
        p[i] -= step_size * (m[i] / denom);
    }
}

/// `torch.nn.utils.clip_grad_norm_` over the [`Role::Weight`] tensors of `grads`: the total
/// L2 norm (accumulated in `f64`); where `max_norm / (norm + 1e-6) < 1`, every weight
/// gradient is scaled by that factor. Returns the norm before clipping; a non-finite norm
/// leaves the gradients as they are (the caller sees it in the result and skips the step).
pub fn clip_grad_norm<T: Float>(grads: &mut ParamSet<T>, max_norm: f64) -> Result<T, NnError> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(NnError::Config(format!(
            "gradient clipping at max norm {max_norm} is invalid: it must be finite and > 0"
        )));
    }
    let sum_sq: f64 = grads
        .weights()
        .flat_map(|t| t.data.iter())
        .map(|x| x.value() * x.value())
        .sum();
    let norm = sum_sq.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let coef_t = T::from_f64(coef);
        for t in grads.iter_mut().filter(|t| t.role == Role::Weight) {
            for x in &mut t.data {
                *x *= coef_t;
            }
        }
    }
    Ok(T::from_f64(norm))
}
