//! The backward kernel: one reverse pass through time per element. Step `t` needs the
//! states before it, which the kernel rebuilds from what step `t - 1` saved and re-reads
//! (`prev_states`), then runs the reverse step: state adjoints from step `t + 1` to step
//! `t - 1`, input gradients, param gradients accumulated per element.

use crate::ir::{Graph, Init, Leaf, Sink};

use super::super::expr::statements;
use super::super::prelude::REDUCE;
use super::super::signature::{ArgRole, KernelArg, KernelKind, KernelSignature};
use super::super::writer::Writer;
use super::lanes::{
    Assign, Pass, StepFn, StepParam, Stream, decl, element, init, lane, per_lane, stream_args,
};
use super::{Gen, reduce};

impl Gen<'_> {
    /// The backward kernel (and, with deterministic reduction, the reduction kernel in the
    /// same source).
    pub fn backward(&self) -> (String, Vec<KernelSignature>) {
        let b = Backward::new(self);
        let name = self.kernel_name(KernelKind::Backward);
        let args = b.args();
        let mut w = self.source(KernelKind::Backward);
        if let Some(prev) = &b.prev {
            w.line("// The states before step t, rebuilt from what step t - 1 saved and re-reads.");
            prev.declare(&mut w);
            w.line("");
        }
        w.line(
            "// One reverse step of one element: takes the state adjoints from step t + 1, returns",
        );
        w.line("// those for step t - 1, writes the input gradients, adds to the param gradients.");
        b.step.declare(&mut w);
        w.line("");
        self.kernel(&mut w, &name, &args, |w| b.kernel_body(w));
        let mut sigs = vec![KernelSignature { name, args }];
        if !self.atomic() && !b.learnable.is_empty() {
            w.line("");
            w.line(REDUCE.trim_end());
            sigs.push(reduce::signature());
        }
        (w.finish(), sigs)
    }
}

/// A `[T, N]` tensor the backward re-reads per step: a save, an input or an output.
struct Reread {
    leaf: Leaf,
    role: ArgRole,
    stream: Stream,
}

/// What the backward kernel reads, writes and calls.
pub(super) struct Backward<'g, 'a> {
    pub(super) g: &'g Gen<'a>,
    /// The params with a gradient.
    pub(super) learnable: Vec<usize>,
    /// Held in `cur_` (step t) and `nxt_` (step t - 1) locals.
    rereads: Vec<Reread>,
    /// Output gradients, read.
    dys: Vec<Stream>,
    /// Input gradients, written.
    dxs: Vec<Stream>,
    /// The states the reverse step reads (their values before step t), in `prev_` locals.
    prev_read: Vec<usize>,
    /// Rebuilds `prev_` locals; none when no state is read.
    prev: Option<StepFn>,
    /// One reverse step.
    step: StepFn,
}

/// The saves, inputs and outputs that the reverse step or the rebuilding of the states
/// reads, in that order.
fn rereads(g: &Gen) -> Vec<Reread> {
    let (c, ir) = (g.c, &g.c.neuron);
    let reads =
        |leaf| c.backward.find_leaf(leaf).is_some() || c.prev_states.find_leaf(leaf).is_some();
    let saves = (0..c.plan.saves.len()).map(|k| Reread {
        leaf: Leaf::Saved(k as u32),
        role: ArgRole::Save(k),
        stream: g.save_stream(k),
    });
    let inputs = (0..ir.inputs.len()).map(|k| Reread {
        leaf: Leaf::Input(k as u32),
        role: ArgRole::Input(k),
        stream: g.input_stream(k),
    });
    let outputs = (0..ir.outputs.len()).map(|m| Reread {
        leaf: Leaf::OutputValue(m as u32),
        role: ArgRole::Output(m),
        stream: g.output_stream(m, "yv_"),
    });
    saves
        .chain(inputs)
        .chain(outputs)
        .filter(|r| reads(r.leaf))
        .collect()
}

impl<'g, 'a> Backward<'g, 'a> {
    fn new(g: &'g Gen<'a>) -> Self {
        let (c, ir) = (g.c, &g.c.neuron);
        let io = c.plan.storage.io;
        let learnable: Vec<usize> = (0..ir.params.len())
            .filter(|&p| ir.params[p].learnable)
            .collect();
        let rereads = rereads(g);
        let dys: Vec<Stream> = (0..ir.outputs.len())
            .map(|m| Stream::new("dy_", "gy_", g.output(m), io))
            .collect();
        let dxs: Vec<Stream> = (0..ir.inputs.len())
            .map(|k| Stream::new("dx_", "gx_", g.input(k), io))
            .collect();
        let prev_read: Vec<usize> = (0..ir.states.len())
            .filter(|&j| c.backward.find_leaf(Leaf::State(j as u32)).is_some())
            .collect();

        // The step functions: rebuilding the states before t, and one reverse step.
        let leaf_name = |l: Leaf| -> String {
            match l {
                Leaf::Saved(_) | Leaf::Input(_) | Leaf::OutputValue(_) => rereads
                    .iter()
                    .find(|r| r.leaf == l)
                    .map(|r| r.stream.local.clone())
                    .unwrap_or_default(),
                Leaf::OutputGrad(m) => dys[m as usize].local.clone(),
                Leaf::State(j) => format!("prev_{}", g.state(j as usize)),
                Leaf::StateGrad(j) => format!("lam_{}", g.state(j as usize)),
                Leaf::Param(p) => format!("p_{}", g.param(p as usize)),
            }
        };
        let used_params = |graph: &Graph| {
            (0..ir.params.len())
                .filter(|&p| graph.find_leaf(Leaf::Param(p as u32)).is_some())
                .map(|p| StepParam::param(g, p))
                .collect::<Vec<_>>()
        };
        let streams = || {
            rereads
                .iter()
                .map(|r| StepParam::new(r.stream.local.clone(), false, Pass::Stream))
        };
        let locals = |s: &[Stream]| s.iter().map(|s| s.local.clone()).collect::<Vec<_>>();
        let prev_names = || prev_read.iter().map(|&j| format!("prev_{}", g.state(j)));

        let prev = (!prev_read.is_empty()).then(|| {
            let params = streams()
                .chain(used_params(&c.prev_states))
                .chain(StepParam::locals(prev_names(), true))
                .collect();
            let stmts = statements(&c.prev_states, "r", &leaf_name);
            StepFn::new(
                format!("{}_prev_states", ir.name),
                params,
                &stmts,
                |sink| match sink {
                    Sink::NextState(j) => {
                        Some(Assign::Set(format!("prev_{}", g.state(j as usize))))
                    }
                    _ => None,
                },
            )
        });

        let lams = (0..ir.states.len()).map(|j| format!("lam_{}", g.state(j)));
        let accs = learnable.iter().map(|&p| format!("acc_{}", g.param(p)));
        let params = streams()
            .chain(StepParam::locals(locals(&dys), false))
            .chain(StepParam::locals(prev_names(), false))
            .chain(used_params(&c.backward))
            .chain(StepParam::locals(lams, true))
            .chain(StepParam::locals(locals(&dxs), true))
            .chain(StepParam::locals(accs, true))
            .collect();
        let stmts = statements(&c.backward, "b", &leaf_name);
        let step = StepFn::new(
            format!("{}_backward_step", ir.name),
            params,
            &stmts,
            |sink| match sink {
                Sink::InputGrad(k) => Some(Assign::Set(dxs[k as usize].local.clone())),
                Sink::StateGradOut(j) => {
                    let s = g.state(j as usize);
                    Some(Assign::Deferred {
                        temp: format!("next_lam_{s}"),
                        var: format!("lam_{s}"),
                    })
                }
                Sink::ParamGrad(p) => Some(Assign::Add(format!("acc_{}", g.param(p as usize)))),
                _ => None,
            },
        );
        Self {
            g,
            learnable,
            rereads,
            dys,
            dxs,
            prev_read,
            prev,
            step,
        }
    }

    fn args(&self) -> Vec<KernelArg> {
        let rereads = (self.rereads.iter()).map(|r| r.stream.kernel_arg(r.role, false));
        stream_args(&self.dys, ArgRole::OutputGrad, false)
            .chain(rereads)
            .chain(self.g.state_args("init_", ArgRole::InitState, false))
            .chain(self.g.state_args("dfinal_", ArgRole::FinalStateGrad, false))
            .chain(stream_args(&self.dxs, ArgRole::InputGrad, true))
            .chain(self.g.state_args("dinit_", ArgRole::InitStateGrad, true))
            .chain(self.param_grad_args())
            .chain(self.g.common_args())
            .collect()
    }

    fn kernel_body(&self, w: &mut Writer) {
        self.declare_totals(w);
        let streams: Vec<&Stream> = (self.dys.iter())
            .chain(self.rereads.iter().map(|r| &r.stream))
            .chain(&self.dxs)
            .collect();
        self.g.group_loop(w, &streams, &|w, vec| self.group(w, vec));
        self.flush_totals(w);
    }

    /// One group's (or element's) work: adjoints from the final states', the steps in
    /// reverse, then the initial states' adjoints and the param gradients.
    fn group(&self, w: &mut Writer, vec: bool) {
        let (g, states) = (self.g, self.g.c.neuron.states.len());
        if vec {
            g.declare_lanes(w, "lam_");
            for &p in &self.learnable {
                w.line(decl(&format!("acc_{}", g.param(p)), true));
            }
        }
        for r in &self.rereads {
            w.line(decl(&format!("cur_{}", r.stream.local), vec));
        }
        per_lane(w, vec, |w| {
            g.load_params(w, vec);
            for j in 0..states {
                let s = g.state(j);
                init(
                    w,
                    &format!("lam_{s}"),
                    &format!("dfinal_{s} ? dfinal_{s}[i] : 0.0f"),
                    vec,
                );
            }
            for &p in &self.learnable {
                init(w, &format!("acc_{}", g.param(p)), "0.0f", vec);
            }
        });
        if !self.rereads.is_empty() {
            w.block("if (steps > 0)", "", |w| {
                w.line(format!(
                    "const long long last = (steps - 1) * n + {};",
                    element(vec)
                ));
                self.load_rereads(w, "cur_", "last", vec);
            });
        }
        g.unrolled_time(w);
        w.block("for (long long t = steps - 1; t >= 0; --t)", "", |w| {
            self.reverse_step(w, vec)
        });
        per_lane(w, vec, |w| {
            self.write_init_adjoints(w, vec);
            self.add_param_grads(w, vec);
        });
    }

    /// `{local}{stream}` = step `at` of each re-read stream.
    fn load_rereads(&self, w: &mut Writer, local: &str, at: &str, vec: bool) {
        for r in &self.rereads {
            let s = &r.stream;
            s.load(w, &format!("{local}{}", s.local), at, vec);
        }
    }

    /// Step `t`: the states before it, the reverse step, and the re-reads moved one step
    /// back.
    fn reverse_step(&self, w: &mut Writer, vec: bool) {
        let g = self.g;
        let base = element(vec);
        for r in &self.rereads {
            w.line(decl(&format!("nxt_{}", r.stream.local), vec));
        }
        for &j in &self.prev_read {
            w.line(decl(&format!("prev_{}", g.state(j)), vec));
        }
        if self.prev.is_some() || !self.rereads.is_empty() {
            w.block("if (t > 0)", "", |w| {
                w.line(format!("const long long before = (t - 1) * n + {base};"));
                self.load_rereads(w, "nxt_", "before", vec);
                if let Some(prev) = &self.prev {
                    prev.call(w, g, vec, "nxt_");
                }
            });
        }
        if self.prev.is_some() {
            // Before step 0: the initial states.
            w.block("else", "", |w| {
                per_lane(w, vec, |w| {
                    for &j in &self.prev_read {
                        let prev = lane(&format!("prev_{}", g.state(j)), vec);
                        w.line(format!("{prev} = {};", g.init(j, vec)));
                    }
                });
            });
        }
        w.line(format!("const long long at = t * n + {base};"));
        for s in &self.dys {
            w.line(decl(&s.local, vec));
            s.load(w, &s.local, "at", vec);
        }
        for s in &self.dxs {
            w.line(decl(&s.local, vec));
        }
        self.step.call(w, g, vec, "cur_");
        for s in &self.dxs {
            s.store(w, "at", vec);
        }
        if !self.rereads.is_empty() {
            per_lane(w, vec, |w| {
                for r in &self.rereads {
                    let l = &r.stream.local;
                    let (cur, nxt) = (
                        lane(&format!("cur_{l}"), vec),
                        lane(&format!("nxt_{l}"), vec),
                    );
                    w.line(format!("{cur} = {nxt};"));
                }
            });
        }
    }

    /// The initial states' adjoints, written where asked for. A state that starts from a
    /// learnable param passes it its gradient, unless the caller gave the initial state.
    fn write_init_adjoints(&self, w: &mut Writer, vec: bool) {
        let (g, ir) = (self.g, &self.g.c.neuron);
        for (j, spec) in ir.states.iter().enumerate() {
            let s = g.state(j);
            let lam = lane(&format!("lam_{s}"), vec);
            w.line(format!("if (dinit_{s}) dinit_{s}[i] = {lam};"));
            if let Init::Param(p) = spec.init
                && ir.params[p as usize].learnable
            {
                let acc = lane(&format!("acc_{}", g.param(p as usize)), vec);
                w.line(format!("if (!init_{s}) {acc} += {lam};"));
            }
        }
    }
}
