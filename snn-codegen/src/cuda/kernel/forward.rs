//! The forward kernels: every step of every element, for training (writing the memory
//! plan's saves) or inference.

use crate::ir::{Graph, Leaf, Sink};

use super::super::expr::statements;
use super::super::signature::{ArgRole, KernelArg, KernelKind, KernelSignature};
use super::super::writer::Writer;
use super::Gen;
use super::lanes::{
    Assign, StepFn, StepParam, Stream, decl, element, init, lane, per_lane, stream_args,
};

impl Gen<'_> {
    /// A forward kernel (training when `train`): its source and signature.
    pub fn forward(&self, train: bool) -> (String, KernelSignature) {
        let kind = if train {
            KernelKind::ForwardTrain
        } else {
            KernelKind::ForwardInference
        };
        let f = Forward::new(self, train);
        let name = self.kernel_name(kind);
        let args = f.args();
        let mut w = self.source(kind);
        w.line(
            "// One step of one element: the states hold their values before the step on entry and",
        );
        w.line("// after it on return.");
        f.step.declare(&mut w);
        w.line("");
        let streams: Vec<&Stream> = f.inputs.iter().chain(&f.outputs).chain(&f.saved).collect();
        self.kernel(&mut w, &name, &args, |w| {
            self.group_loop(w, &streams, &|w, vec| f.group(w, vec));
        });
        (w.finish(), KernelSignature { name, args })
    }
}

/// What a forward kernel reads, writes and calls.
struct Forward<'g, 'a> {
    g: &'g Gen<'a>,
    inputs: Vec<Stream>,
    outputs: Vec<Stream>,
    /// The memory plan's saves (training only).
    saved: Vec<Stream>,
    step: StepFn,
}

impl<'g, 'a> Forward<'g, 'a> {
    fn new(g: &'g Gen<'a>, train: bool) -> Self {
        let (c, ir) = (g.c, &g.c.neuron);
        let graph: &Graph = if train { &c.forward_train } else { &ir.graph };
        let saves = if train { c.plan.saves.len() } else { 0 };
        let inputs: Vec<Stream> = (0..ir.inputs.len()).map(|k| g.input_stream(k)).collect();
        let outputs: Vec<Stream> = (0..ir.outputs.len())
            .map(|m| g.output_stream(m, "out_"))
            .collect();
        let saved: Vec<Stream> = (0..saves).map(|k| g.save_stream(k)).collect();

        let locals = |s: &[Stream]| s.iter().map(|s| s.local.clone()).collect::<Vec<_>>();
        let states = (0..ir.states.len()).map(|j| format!("st_{}", g.state(j)));
        let params = StepParam::locals(locals(&inputs), false)
            .chain(StepParam::locals(states, true))
            .chain((0..ir.params.len()).map(|p| StepParam::param(g, p)))
            .chain(StepParam::locals(locals(&outputs), true))
            .chain(StepParam::locals(locals(&saved), true))
            .collect();
        let stmts = statements(graph, "f", &|l| match l {
            Leaf::Input(k) => inputs[k as usize].local.clone(),
            Leaf::State(j) => format!("st_{}", g.state(j as usize)),
            Leaf::Param(p) => format!("p_{}", g.param(p as usize)),
            other => format!("/* {other} */ 0.0f"),
        });
        let name = format!("{}_step{}", ir.name, if train { "_train" } else { "" });
        let step = StepFn::new(name, params, &stmts, |sink| match sink {
            Sink::Output(m) => Some(Assign::Set(outputs[m as usize].local.clone())),
            Sink::Save(k) => Some(Assign::Set(format!("sv_{}", g.save(k as usize)))),
            Sink::NextState(j) => {
                let s = g.state(j as usize);
                Some(Assign::Deferred {
                    temp: format!("next_{s}"),
                    var: format!("st_{s}"),
                })
            }
            _ => None,
        });
        Self {
            g,
            inputs,
            outputs,
            saved,
            step,
        }
    }

    fn args(&self) -> Vec<KernelArg> {
        stream_args(&self.inputs, ArgRole::Input, false)
            .chain(stream_args(&self.outputs, ArgRole::Output, true))
            .chain(stream_args(&self.saved, ArgRole::Save, true))
            .chain(self.g.state_args("init_", ArgRole::InitState, false))
            .chain(self.g.state_args("final_", ArgRole::FinalState, true))
            .chain(self.g.common_args())
            .collect()
    }

    /// One group's (or element's) work: initial states, the time loop, final states.
    fn group(&self, w: &mut Writer, vec: bool) {
        let (g, states) = (self.g, self.g.c.neuron.states.len());
        if vec {
            g.declare_lanes(w, "st_");
        }
        per_lane(w, vec, |w| {
            g.load_params(w, vec);
            for j in 0..states {
                init(w, &format!("st_{}", g.state(j)), &g.init(j, vec), vec);
            }
        });
        g.unrolled_time(w);
        w.block("for (long long t = 0; t < steps; ++t)", "", |w| {
            w.line(format!("const long long at = t * n + {};", element(vec)));
            for s in &self.inputs {
                w.line(decl(&s.local, vec));
                s.load(w, &s.local, "at", vec);
            }
            let written = || self.outputs.iter().chain(&self.saved);
            for s in written() {
                w.line(decl(&s.local, vec));
            }
            self.step.call(w, g, vec, "");
            for s in written() {
                s.store(w, "at", vec);
            }
        });
        per_lane(w, vec, |w| {
            for j in 0..states {
                let s = g.state(j);
                let last = lane(&format!("st_{s}"), vec);
                w.line(format!("if (final_{s}) final_{s}[i] = {last};"));
            }
        });
    }
}
