//! A step graph flattened into instructions over registers, evaluated a block of elements
//! at a time: each instruction runs over every lane of the block before the next starts,
//! so dispatch costs once per block, not once per element.

use crate::ir::{Binary, Cmp, Graph, Leaf, Op, Sink, Surrogate, Unary};

use super::real::Real;

/// Lanes per block.
pub const LANES: usize = 256;

#[derive(Clone, Debug)]
enum Instr {
    Const(f64),
    Unary(Unary, usize),
    Binary(Binary, usize, usize),
    Cmp(Cmp, usize, usize),
    Powf(f64, usize),
    Clamp(usize, usize, usize),
    Select(usize, usize, usize),
    Spike(usize, usize),
    Detach(usize),
}

/// A flattened step graph. Register `r` holds lanes `r * LANES ..`.
#[derive(Clone, Debug)]
pub struct Program {
    /// Registers the driver fills before running, one per leaf.
    pub leaves: Vec<(Leaf, usize)>,
    /// Instructions with their destination register, in dependency order.
    code: Vec<(usize, Instr)>,
    /// Registers holding each sink's value after running.
    pub sinks: Vec<(Sink, usize)>,
    surrogates: Vec<Surrogate>,
    pub registers: usize,
}

impl Program {
    /// Flattens an acyclic graph (validated or generated).
    pub fn new(g: &Graph) -> Program {
        let order = g.topo_order().unwrap_or_default();
        let mut reg = std::collections::BTreeMap::new();
        let mut p = Program {
            leaves: Vec::new(),
            code: Vec::new(),
            sinks: Vec::new(),
            surrogates: g.surrogates().to_vec(),
            registers: 0,
        };
        for n in order {
            let a: Vec<usize> = g.operands(n).iter().map(|o| reg[o]).collect();
            let r = p.registers;
            let instr = match g.op(n) {
                Op::Leaf(l) => {
                    p.leaves.push((l, r));
                    None
                }
                Op::Sink(s) => {
                    p.sinks.push((s, a[0]));
                    continue;
                }
                Op::Const(c) => Some(Instr::Const(c)),
                Op::Unary(u) => Some(Instr::Unary(u, a[0])),
                Op::Binary(b) => Some(Instr::Binary(b, a[0], a[1])),
                Op::Cmp(c) => Some(Instr::Cmp(c, a[0], a[1])),
                Op::Powf(e) => Some(Instr::Powf(e, a[0])),
                Op::Clamp => Some(Instr::Clamp(a[0], a[1], a[2])),
                Op::Select => Some(Instr::Select(a[0], a[1], a[2])),
                Op::Spike(k) => Some(Instr::Spike(k as usize, a[0])),
                Op::Detach => Some(Instr::Detach(a[0])),
            };
            if let Some(i) = instr {
                p.code.push((r, i));
            }
            reg.insert(n, r);
            p.registers += 1;
        }
        p.sinks.sort_by_key(|s| s.0);
        p
    }

    /// The register of a leaf, if the program reads it.
    pub fn leaf(&self, leaf: Leaf) -> Option<usize> {
        self.leaves.iter().find(|l| l.0 == leaf).map(|l| l.1)
    }

    /// The register of a sink's value.
    pub fn sink(&self, sink: Sink) -> Option<usize> {
        self.sinks.iter().find(|s| s.0 == sink).map(|s| s.1)
    }

    /// Runs the instructions over the first `lanes` lanes of `regs`
    /// (`registers * LANES` values; leaves already filled).
    pub fn run<T: Real>(&self, regs: &mut [T], lanes: usize) {
        for (dst, instr) in &self.code {
            // Operands always live in lower registers than their result.
            let (src, rest) = regs.split_at_mut(dst * LANES);
            let out = &mut rest[..lanes];
            let arg = |k: usize| &src[k * LANES..k * LANES + lanes];
            match *instr {
                Instr::Const(c) => out.fill(T::from_f64(c)),
                Instr::Unary(u, a) => {
                    let x = arg(a);
                    match u {
                        Unary::Neg => map1(out, x, |x| -x),
                        Unary::Abs => map1(out, x, T::abs),
                        Unary::Exp => map1(out, x, T::exp),
                        Unary::Log => map1(out, x, T::ln),
                        Unary::Sqrt => map1(out, x, T::sqrt),
                        Unary::Tanh => map1(out, x, T::tanh),
                        Unary::Atan => map1(out, x, T::atan),
                        Unary::Sigmoid => map1(out, x, T::sigmoid),
                    }
                }
                Instr::Binary(b, a, c) => {
                    let (x, y) = (arg(a), arg(c));
                    match b {
                        Binary::Add => map2(out, x, y, |x, y| x + y),
                        Binary::Sub => map2(out, x, y, |x, y| x - y),
                        Binary::Mul => map2(out, x, y, |x, y| x * y),
                        Binary::Div => map2(out, x, y, |x, y| x / y),
                        // Ties pick the first operand, as the gradient does.
                        Binary::Min => map2(out, x, y, |x, y| if x <= y { x } else { y }),
                        Binary::Max => map2(out, x, y, |x, y| if x >= y { x } else { y }),
                    }
                }
                Instr::Cmp(c, a, b) => {
                    let (x, y) = (arg(a), arg(b));
                    for i in 0..lanes {
                        out[i] =
                            T::from_f64(f64::from(u8::from(c.eval(x[i].value(), y[i].value()))));
                    }
                }
                Instr::Powf(e, a) => {
                    for (o, &x) in out.iter_mut().zip(arg(a)) {
                        *o = x.powf(e);
                    }
                }
                Instr::Clamp(x, lo, hi) => {
                    let (x, lo, hi) = (arg(x), arg(lo), arg(hi));
                    for i in 0..lanes {
                        out[i] = if x[i] < lo[i] {
                            lo[i]
                        } else if x[i] > hi[i] {
                            hi[i]
                        } else {
                            x[i]
                        };
                    }
                }
                Instr::Select(c, a, b) => {
                    let (c, a, b) = (arg(c), arg(a), arg(b));
                    for i in 0..lanes {
                        out[i] = if c[i].value() != 0.0 { a[i] } else { b[i] };
                    }
                }
                Instr::Spike(k, a) => {
                    let s = &self.surrogates[k];
                    for (o, &h) in out.iter_mut().zip(arg(a)) {
                        *o = h.spike(s);
                    }
                }
                Instr::Detach(a) => map1(out, arg(a), T::detach),
            }
        }
    }
}

fn map1<T: Copy>(out: &mut [T], a: &[T], f: impl Fn(T) -> T) {
    for (o, &x) in out.iter_mut().zip(a) {
        *o = f(x);
    }
}

fn map2<T: Copy>(out: &mut [T], a: &[T], b: &[T], f: impl Fn(T, T) -> T) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = f(x, y);
    }
}
