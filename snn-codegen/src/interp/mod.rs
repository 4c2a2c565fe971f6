//! The CPU reference interpreter: the semantics every GPU kernel is checked against.
//!
//! It runs the compiled step programs over `[T, N]` sequences the way the kernels do: each
//! block of elements keeps its states in "registers" and walks forward through time
//! (backward: in reverse, rebuilding each step's states from the previous step's saves).
//! It computes in `f32`, `f64` or [`Dual`] numbers, rounds stored tensors to the plan's
//! storage dtypes, and takes initial states in and gives final states (and state
//! adjoints) out, so a sequence processed in chunks matches one processed whole.

mod program;
mod real;
mod tensor;

use thiserror::Error;

use crate::compile::Compiled;
use crate::ir::{Init, Leaf, Sink};
use crate::layer::Mode;

pub use program::{LANES, Program};
pub use real::{Dual, Real};
pub use tensor::{Params, Seq};

/// Bad arguments to the interpreter.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum RunError {
    #[error("{what}: neuron `{neuron}` takes {expected}, got {got}")]
    Count {
        neuron: String,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{what} has shape [{got_steps}, {got_n}], expected [{steps}, {n}] (time-major [T, N])")]
    Shape {
        what: String,
        steps: usize,
        n: usize,
        got_steps: usize,
        got_n: usize,
    },
    #[error("{what} has {got} values, expected {expected}")]
    Length {
        what: String,
        expected: usize,
        got: usize,
    },
    #[error(
        "the layer has {n} elements, which is not a multiple of its {neurons} neurons (channels x inner); fix the layout or the tensor shape"
    )]
    Layout { n: usize, neurons: usize },
    #[error("param `{param}` is {shape} and needs {expected} value(s) for this layout, got {got}")]
    ParamLength {
        param: String,
        shape: String,
        expected: usize,
        got: usize,
    },
    #[error("no param named `{name}`; the neuron's params are: {known}")]
    UnknownParam { name: String, known: String },
    #[error(
        "these params belong to another neuron, not `{neuron}`; make them with `Params::defaults` of this neuron"
    )]
    ParamsOfOtherNeuron { neuron: String },
    #[error(
        "neuron `{neuron}` has no inputs, so the interpreter cannot tell the number of steps and elements; give the neuron an input (it may be a constant drive)"
    )]
    NoInputs { neuron: String },
    #[error(
        "backward needs the saved tensors of a training forward pass; run forward with `Mode::Train`"
    )]
    NoSaves,
}

/// What a forward pass produces.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward<T> {
    pub outputs: Vec<Seq<T>>,
    /// The memory plan's saves (empty in inference).
    pub saved: Vec<Seq<T>>,
    pub final_states: Vec<Vec<T>>,
}

/// What a backward pass produces.
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients<T> {
    pub inputs: Vec<Seq<T>>,
    /// `dL/ds_j` before the first step: pass it as `grad_final_states` to the backward of
    /// the previous chunk.
    pub init_states: Vec<Vec<T>>,
    /// `dL/dp` for learnable params (`None` for fixed ones), summed over time and over the
    /// elements that share each value.
    pub params: Vec<Option<Vec<T>>>,
}

/// A compiled neuron ready to run on the CPU.
#[derive(Clone, Debug)]
pub struct Reference {
    compiled: Compiled,
    forward: Program,
    forward_train: Program,
    backward: Program,
    prev_states: Program,
}

/// Per-block registers and the element range they hold.
struct Block<T> {
    regs: Vec<T>,
    start: usize,
    lanes: usize,
}

impl<T: Real> Block<T> {
    fn fill(&mut self, reg: usize, f: impl Fn(usize) -> T) {
        for i in 0..self.lanes {
            self.regs[reg * LANES + i] = f(self.start + i);
        }
    }
    fn lane(&self, reg: usize, i: usize) -> T {
        self.regs[reg * LANES + i]
    }
}

/// Checks that each sequence is `[steps, n]`; `name(k)` names sequence `k` in errors.
fn check_seqs<T>(
    name: impl Fn(usize) -> String,
    seqs: &[Seq<T>],
    steps: usize,
    n: usize,
) -> Result<(), RunError> {
    for (k, s) in seqs.iter().enumerate() {
        if s.data.len() != s.steps * s.n {
            return Err(RunError::Length {
                what: format!("{} (declared [{}, {}])", name(k), s.steps, s.n),
                expected: s.steps * s.n,
                got: s.data.len(),
            });
        }
        if s.steps != steps || s.n != n {
            return Err(RunError::Shape {
                what: name(k),
                steps,
                n,
                got_steps: s.steps,
                got_n: s.n,
            });
        }
    }
    Ok(())
}

impl Reference {
    pub fn new(compiled: Compiled) -> Self {
        Self {
            forward: Program::new(&compiled.neuron.graph),
            forward_train: Program::new(&compiled.forward_train),
            backward: Program::new(&compiled.backward),
            prev_states: Program::new(&compiled.prev_states),
            compiled,
        }
    }

    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// `[T, N]` of the run, from the first input.
    fn shape<T>(&self, inputs: &[Seq<T>]) -> Result<(usize, usize), RunError> {
        let first = inputs.first().ok_or_else(|| RunError::NoInputs {
            neuron: self.compiled.neuron.name.clone(),
        })?;
        Ok((first.steps, first.n))
    }

    fn count(&self, what: &'static str, expected: usize, got: usize) -> Result<(), RunError> {
        if expected == got {
            Ok(())
        } else {
            Err(RunError::Count {
                neuron: self.compiled.neuron.name.clone(),
                what,
                expected,
                got,
            })
        }
    }

    fn check_states<T>(
        &self,
        what: &'static str,
        s: Option<&[Vec<T>]>,
        n: usize,
    ) -> Result<(), RunError> {
        if let Some(s) = s {
            self.count(what, self.compiled.neuron.states.len(), s.len())?;
            for (j, v) in s.iter().enumerate() {
                if v.len() != n {
                    let state = &self.compiled.neuron.states[j].name;
                    return Err(RunError::Length {
                        what: format!("{what}: state `{state}` (one value per element)"),
                        expected: n,
                        got: v.len(),
                    });
                }
            }
        }
        Ok(())
    }

    fn check_params<T: Real>(&self, params: &Params<T>, n: usize) -> Result<(), RunError> {
        params.check(&self.compiled.neuron)?;
        let neurons = params.layout.neurons();
        if neurons == 0 || !n.is_multiple_of(neurons) {
            return Err(RunError::Layout { n, neurons });
        }
        Ok(())
    }

    /// State `j`'s initial value for element `i`.
    fn init<T: Real>(&self, params: &Params<T>, given: Option<&[Vec<T>]>, j: usize, i: usize) -> T {
        match (given, self.compiled.neuron.states[j].init) {
            (Some(s), _) => s[j][i],
            (None, Init::Const(c)) => T::from_f64(c),
            (None, Init::Param(p)) => params.at(p as usize, i),
        }
    }

    /// Runs the neuron forward over `inputs` (each `[T, N]`), from `init` states (default:
    /// the declared initial values).
    pub fn forward<T: Real>(
        &self,
        params: &Params<T>,
        inputs: &[Seq<T>],
        init: Option<&[Vec<T>]>,
        mode: Mode,
    ) -> Result<Forward<T>, RunError> {
        let ir = &self.compiled.neuron;
        self.count("inputs", ir.inputs.len(), inputs.len())?;
        let (steps, n) = self.shape(inputs)?;
        check_seqs(|k| format!("input `{}`", ir.inputs[k]), inputs, steps, n)?;
        self.check_params(params, n)?;
        self.check_states("initial states", init, n)?;
        let prog = if mode == Mode::Train {
            &self.forward_train
        } else {
            &self.forward
        };
        let st = self.compiled.plan.storage;
        let saves = if mode == Mode::Train {
            self.compiled.plan.saves.len()
        } else {
            0
        };
        let mut out = Forward {
            outputs: vec![Seq::zeros(steps, n); ir.outputs.len()],
            saved: vec![Seq::zeros(steps, n); saves],
            final_states: vec![vec![T::from_f64(0.0); n]; ir.states.len()],
        };
        let mut b = Block {
            regs: vec![T::from_f64(0.0); prog.registers.max(1) * LANES],
            start: 0,
            lanes: 0,
        };
        let mut state = vec![vec![T::from_f64(0.0); LANES]; ir.states.len()];
        for start in (0..n).step_by(LANES) {
            b.start = start;
            b.lanes = LANES.min(n - start);
            for (j, s) in state.iter_mut().enumerate() {
                for (i, v) in s.iter_mut().take(b.lanes).enumerate() {
                    *v = self.init(params, init, j, start + i);
                }
            }
            for &(leaf, r) in &prog.leaves {
                if let Leaf::Param(p) = leaf {
                    b.fill(r, |i| params.at(p as usize, i));
                }
            }
            for t in 0..steps {
                for &(leaf, r) in &prog.leaves {
                    match leaf {
                        Leaf::Input(k) => b.fill(r, |i| inputs[k as usize].data[t * n + i]),
                        Leaf::State(j) => b.fill(r, |i| state[j as usize][i - start]),
                        _ => {}
                    }
                }
                prog.run(&mut b.regs, b.lanes);
                for &(sink, r) in &prog.sinks {
                    let vals = &b.regs[r * LANES..r * LANES + b.lanes];
                    let at = t * n + start..t * n + start + b.lanes;
                    let (dst, dtype) = match sink {
                        Sink::Output(m) => (
                            &mut out.outputs[m as usize].data[at],
                            self.compiled.output_dtype(m as usize),
                        ),
                        Sink::Save(k) => (&mut out.saved[k as usize].data[at], st.saves),
                        Sink::NextState(j) => {
                            state[j as usize][..b.lanes].copy_from_slice(vals);
                            continue;
                        }
                        _ => continue,
                    };
                    for (d, v) in dst.iter_mut().zip(vals) {
                        *d = v.stored(dtype);
                    }
                }
            }
            for (j, s) in state.iter().enumerate() {
                out.final_states[j][start..start + b.lanes].copy_from_slice(&s[..b.lanes]);
            }
        }
        Ok(out)
    }

    /// Runs one backward pass through time.
    ///
    /// `inputs`, `fwd` and `init` are those of the forward pass; `grad_outputs` are
    /// `dL/dy` (each `[T, N]`); `grad_final_states` is `dL/ds[T-1]` from a later chunk
    /// (default zero).
    pub fn backward<T: Real>(
        &self,
        params: &Params<T>,
        inputs: &[Seq<T>],
        init: Option<&[Vec<T>]>,
        fwd: &Forward<T>,
        grad_outputs: &[Seq<T>],
        grad_final_states: Option<&[Vec<T>]>,
    ) -> Result<Gradients<T>, RunError> {
        let c = &self.compiled;
        let ir = &c.neuron;
        self.count("inputs", ir.inputs.len(), inputs.len())?;
        self.count("output gradients", ir.outputs.len(), grad_outputs.len())?;
        let (steps, n) = self.shape(inputs)?;
        check_seqs(|k| format!("input `{}`", ir.inputs[k]), inputs, steps, n)?;
        let out = |what: &'static str| move |m: usize| format!("{what} `{}`", ir.outputs[m]);
        check_seqs(out("gradient of output"), grad_outputs, steps, n)?;
        check_seqs(out("forward output"), &fwd.outputs, steps, n)?;
        if fwd.saved.len() != c.plan.saves.len() {
            return Err(RunError::NoSaves);
        }
        check_seqs(
            |k| format!("saved tensor `{}`", c.plan.saves[k].name),
            &fwd.saved,
            steps,
            n,
        )?;
        self.check_params(params, n)?;
        self.check_states("initial states", init, n)?;
        self.check_states("final state gradients", grad_final_states, n)?;
        let st = c.plan.storage;
        let zero = T::from_f64(0.0);

        // Per-step tensors the backward reads (at step t, and at t - 1 for the states).
        let stream = |leaf: Leaf| -> &Seq<T> {
            match leaf {
                Leaf::Saved(k) => &fwd.saved[k as usize],
                Leaf::Input(k) => &inputs[k as usize],
                Leaf::OutputValue(m) => &fwd.outputs[m as usize],
                _ => unreachable!("only streams are passed here"),
            }
        };
        let (bp, pp) = (&self.backward, &self.prev_states);
        let mut grads = Gradients {
            inputs: vec![Seq::zeros(steps, n); ir.inputs.len()],
            init_states: vec![vec![zero; n]; ir.states.len()],
            params: ir
                .params
                .iter()
                .map(|p| p.learnable.then(|| vec![zero; params.layout.len(p.shape)]))
                .collect(),
        };
        let mut pacc: Vec<Vec<f64>> = grads
            .params
            .iter()
            .map(|g| vec![0.0; g.as_ref().map_or(0, Vec::len)])
            .collect();
        let mut b = Block {
            regs: vec![zero; bp.registers.max(1) * LANES],
            start: 0,
            lanes: 0,
        };
        let mut pb = Block {
            regs: vec![zero; pp.registers.max(1) * LANES],
            start: 0,
            lanes: 0,
        };
        let mut adj = vec![vec![zero; LANES]; ir.states.len()];
        for start in (0..n).step_by(LANES) {
            let lanes = LANES.min(n - start);
            (b.start, b.lanes, pb.start, pb.lanes) = (start, lanes, start, lanes);
            for (j, a) in adj.iter_mut().enumerate() {
                for (i, v) in a.iter_mut().take(lanes).enumerate() {
                    *v = grad_final_states.map_or(zero, |g| g[j][start + i]);
                }
            }
            for &(leaf, r) in &bp.leaves {
                if let Leaf::Param(p) = leaf {
                    b.fill(r, |i| params.at(p as usize, i));
                }
            }
            for &(leaf, r) in &pp.leaves {
                if let Leaf::Param(p) = leaf {
                    pb.fill(r, |i| params.at(p as usize, i));
                }
            }
            for t in (0..steps).rev() {
                // The states before step t.
                if t > 0 {
                    for &(leaf, r) in &pp.leaves {
                        if leaf.is_stream() {
                            let s = stream(leaf);
                            pb.fill(r, |i| s.data[(t - 1) * n + i]);
                        }
                    }
                    pp.run(&mut pb.regs, lanes);
                }
                for &(leaf, r) in &bp.leaves {
                    match leaf {
                        Leaf::Saved(_) | Leaf::Input(_) | Leaf::OutputValue(_) => {
                            let s = stream(leaf);
                            b.fill(r, |i| s.data[t * n + i]);
                        }
                        Leaf::OutputGrad(m) => {
                            b.fill(r, |i| grad_outputs[m as usize].data[t * n + i])
                        }
                        Leaf::StateGrad(j) => b.fill(r, |i| adj[j as usize][i - start]),
                        Leaf::State(j) => {
                            if t > 0 {
                                let pr = pp.sink(Sink::NextState(j)).unwrap_or(0);
                                for i in 0..lanes {
                                    b.regs[r * LANES + i] = pb.lane(pr, i);
                                }
                            } else {
                                b.fill(r, |i| self.init(params, init, j as usize, i));
                            }
                        }
                        Leaf::Param(_) => {}
                    }
                }
                bp.run(&mut b.regs, lanes);
                for &(sink, r) in &bp.sinks {
                    match sink {
                        Sink::InputGrad(k) => {
                            let dst = &mut grads.inputs[k as usize].data
                                [t * n + start..t * n + start + lanes];
                            for (i, d) in dst.iter_mut().enumerate() {
                                *d = b.lane(r, i).stored(st.io);
                            }
                        }
                        Sink::StateGradOut(j) => {
                            adj[j as usize][..lanes]
                                .copy_from_slice(&b.regs[r * LANES..r * LANES + lanes]);
                        }
                        Sink::ParamGrad(p) => {
                            let shape = ir.params[p as usize].shape;
                            for i in 0..lanes {
                                let idx = params.layout.index(shape, start + i);
                                pacc[p as usize][idx] += b.lane(r, i).value();
                            }
                        }
                        _ => {}
                    }
                }
            }
            for (j, a) in adj.iter().enumerate() {
                grads.init_states[j][start..start + lanes].copy_from_slice(&a[..lanes]);
                // A state that starts from a learnable param passes its gradient on to it,
                // unless the caller supplied the initial states.
                if let (None, Init::Param(p)) = (init, ir.states[j].init) {
                    let spec = &ir.params[p as usize];
                    if spec.learnable {
                        for (i, v) in a.iter().take(lanes).enumerate() {
                            pacc[p as usize][params.layout.index(spec.shape, start + i)] +=
                                v.value();
                        }
                    }
                }
            }
        }
        for (g, acc) in grads.params.iter_mut().zip(pacc) {
            if let Some(g) = g {
                *g = acc.into_iter().map(T::from_f64).collect();
            }
        }
        Ok(grads)
    }
}
