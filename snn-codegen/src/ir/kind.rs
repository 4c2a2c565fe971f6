//! Spike kinds: the values an output can take, found from the graph, so that narrow storage
//! keeps a spike train in one byte (`u8` for 0/1, `i8` for -1/0/1) however it is built:
//! `spike(..)` itself, `1 - s`, `s1 * s2`, `select` of spikes, `spike(a) - spike(b)`.

use std::collections::BTreeMap;
use std::fmt;

use super::{Binary, Graph, NodeId, Op, Unary};

/// What values an output takes at every step, whatever the inputs, params and states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpikeKind {
    /// Only 0 and 1.
    Binary,
    /// Only -1, 0 and 1 (signed spikes).
    Ternary,
    /// Any real value.
    General,
}

impl SpikeKind {
    /// Whether it is a spike train of either kind (exactly representable in any dtype).
    pub fn is_spike(self) -> bool {
        self != SpikeKind::General
    }
}

impl fmt::Display for SpikeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpikeKind::Binary => "binary spikes",
            SpikeKind::Ternary => "ternary spikes",
            SpikeKind::General => "real",
        })
    }
}

/// A set of values among {-1, 0, 1} (bit k holds value k - 1), or `None` for any real.
type Values = Option<u8>;

const VALUES: [f64; 3] = [-1.0, 0.0, 1.0];

fn single(c: f64) -> Values {
    VALUES.iter().position(|&v| v == c).map(|k| 1 << k)
}

fn members(set: u8) -> impl Iterator<Item = f64> {
    (0..3)
        .filter(move |k| set & (1 << k) != 0)
        .map(|k| VALUES[k])
}

/// The set of `f` over every combination of members, if each result is -1, 0 or 1.
fn map(sets: &[u8], f: impl Fn(&[f64]) -> f64) -> Values {
    let mut out = 0;
    let mut pick = vec![0.0; sets.len()];
    fn go(
        sets: &[u8],
        pick: &mut [f64],
        at: usize,
        f: &dyn Fn(&[f64]) -> f64,
        out: &mut u8,
    ) -> bool {
        if at == sets.len() {
            return match single(f(pick)) {
                Some(bit) => {
                    *out |= bit;
                    true
                }
                None => false,
            };
        }
        members(sets[at]).all(|v| {
            pick[at] = v;
            go(sets, pick, at + 1, f, out)
        })
    }
    go(sets, &mut pick, 0, &f, &mut out).then_some(out)
}

/// The values node `n` takes. States, inputs and params are any real (a run may start from
/// any state), so only what is built from spikes and constants is found narrow.
fn values(g: &Graph, n: NodeId, memo: &mut BTreeMap<NodeId, Values>) -> Values {
    if let Some(&v) = memo.get(&n) {
        return v;
    }
    let operands = g.operands(n);
    let mut arg = |k: usize| operands.get(k).and_then(|&o| values(g, o, memo));
    let v = match g.op(n) {
        Op::Const(c) => single(c),
        Op::Spike(_) => Some(0b110),
        Op::Detach => arg(0),
        Op::Select => match (arg(1), arg(2)) {
            (Some(a), Some(b)) => Some(a | b),
            _ => None,
        },
        Op::Unary(u) => arg(0).and_then(|a| match u {
            Unary::Neg => map(&[a], |x| -x[0]),
            Unary::Abs => map(&[a], |x| x[0].abs()),
            _ => None,
        }),
        Op::Powf(e) => arg(0).and_then(|a| map(&[a], |x| x[0].powf(e))),
        Op::Binary(b) => {
            let f = |x: f64, y: f64| match b {
                Binary::Add => x + y,
                Binary::Sub => x - y,
                Binary::Mul => x * y,
                // Not -1, 0 or 1 unless the divisor is ±1 (x / 0 is not finite).
                Binary::Div => x / y,
                Binary::Min => x.min(y),
                Binary::Max => x.max(y),
            };
            match (arg(0), arg(1)) {
                // One value twice (`y * y`): its members paired with themselves only.
                (Some(x), Some(_)) if operands[0] == operands[1] => map(&[x], |v| f(v[0], v[0])),
                (Some(x), Some(y)) => map(&[x, y], |v| f(v[0], v[1])),
                _ => None,
            }
        }
        Op::Clamp => match (arg(0), arg(1), arg(2)) {
            (Some(x), Some(lo), Some(hi)) => map(&[x, lo, hi], |v| v[0].max(v[1]).min(v[2])),
            _ => None,
        },
        Op::Leaf(_) | Op::Cmp(_) | Op::Sink(_) => None,
    };
    memo.insert(n, v);
    v
}

/// The kind of the value node `n` of `g` computes.
pub fn kind(g: &Graph, n: NodeId) -> SpikeKind {
    match values(g, n, &mut BTreeMap::new()) {
        Some(set) if set & 0b001 == 0 => SpikeKind::Binary,
        Some(_) => SpikeKind::Ternary,
        None => SpikeKind::General,
    }
}

#[cfg(test)]
mod tests {
    use super::SpikeKind::{self, Binary, General, Ternary};
    use crate::builder::{NeuronBuilder, Value};

    /// The kind of the output `f` builds from spikes of `h` and `-h`, the input `x` and the
    /// state `v`.
    fn kind_of(f: impl for<'a> Fn(&'a NeuronBuilder, [Value<'a>; 4]) -> Value<'a>) -> SpikeKind {
        let b = NeuronBuilder::new("k").surrogate(crate::Surrogate::sigmoid(4.0));
        let x = b.input("x");
        let v = b.state("v", 0.0);
        let h = v + x;
        let (s1, s2) = (b.spike(h - 1.0), b.spike(-h - 1.0));
        v.set(h);
        b.output("y", f(&b, [s1, s2, x, v]));
        b.finish().unwrap().output_kind(0)
    }

    #[test]
    fn spikes_and_what_is_built_from_them_keep_their_kind() {
        assert_eq!(kind_of(|_, [s, ..]| s), Binary);
        assert_eq!(kind_of(|_, [s, ..]| 1.0 - s), Binary);
        assert_eq!(kind_of(|_, [s1, s2, ..]| s1 * s2), Binary);
        assert_eq!(kind_of(|_, [s1, s2, ..]| s1 * (1.0 - s2)), Binary);
        assert_eq!(
            kind_of(|_, [s1, s2, x, _]| x.gt(0.0).select(s1, s2)),
            Binary
        );
        assert_eq!(kind_of(|_, [s, ..]| s.detach()), Binary);
        assert_eq!(kind_of(|b, _| b.constant(1.0)), Binary);
        assert_eq!(kind_of(|_, [s1, s2, ..]| s1 - s2), Ternary);
        assert_eq!(kind_of(|_, [s, ..]| -s), Ternary);
        assert_eq!(
            kind_of(|_, [s1, s2, ..]| {
                let d = s1 - s2;
                d * d
            }),
            Binary
        );
        assert_eq!(kind_of(|_, [s1, s2, ..]| (s1 - s2).powf(2.0)), Binary);
        assert_eq!(kind_of(|_, [s1, s2, ..]| (s1 - s2).abs()), Binary);
    }

    #[test]
    fn anything_that_may_leave_minus_one_zero_one_is_general() {
        assert_eq!(kind_of(|_, [s1, s2, ..]| s1 + s2), General);
        assert_eq!(kind_of(|_, [s, ..]| s * 2.0), General);
        assert_eq!(kind_of(|_, [s, ..]| s / 2.0), General);
        assert_eq!(kind_of(|_, [s1, s2, ..]| s1 / s2), General);
        assert_eq!(kind_of(|_, [s, _, x, _]| s * x), General);
        // A state may start anywhere (a run's initial states are the caller's).
        assert_eq!(kind_of(|_, [.., v]| v), General);
        assert_eq!(kind_of(|_, [s, ..]| s.exp()), General);
    }
}
