//! Surrogate gradients: `spike(h)` is a Heaviside step forward; backward, its derivative is
//! replaced by a smooth or windowed stand-in.

use std::f64::consts::PI;
use std::fmt;
use std::sync::Arc;

use super::graph::{Graph, NodeId};
use super::op::{Binary, Cmp, Leaf, Op, Sink, Unary};

/// The derivative that `spike(h)` pretends to have.
///
/// The built-in shapes follow SpikingJelly and snnTorch; `rect` follows the temporal-fusion
/// paper's kernel (height 1, so `rect(0.5)` has unit area).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Surrogate {
    /// `alpha * s * (1 - s)` with `s = sigmoid(alpha * h)`.
    Sigmoid { alpha: f64 },
    /// `(alpha / 2) / (1 + (pi / 2 * alpha * h)^2)`.
    Atan { alpha: f64 },
    /// `1` where `|h| < width`, else `0`.
    Rect { width: f64 },
    /// `max(0, 1 - |h| / width)`: peak 1 at `h = 0`, zero from `|h| = width`.
    Triangle { width: f64 },
    /// SuperSpike / fast sigmoid: `1 / (1 + alpha * |h|)^2`.
    FastSigmoid { alpha: f64 },
    /// `max(0, alpha - alpha^2 * |h|)` (SpikingJelly's `PiecewiseQuadratic`).
    PiecewiseQuadratic { alpha: f64 },
    /// A user-written derivative, an expression of `h`.
    Custom(CustomSurrogate),
}

/// A derivative written as a graph with one input (`h`) and one output.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CustomSurrogate {
    graph: Arc<Graph>,
    text: String,
}

impl PartialEq for CustomSurrogate {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl CustomSurrogate {
    /// Wraps a graph that reads `Leaf::Input(0)` as `h` and writes `Sink::Output(0)`.
    /// `text` is how the expression prints; it also identifies the surrogate.
    pub fn new(graph: Graph, text: String) -> Self {
        Self {
            graph: Arc::new(graph),
            text,
        }
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

impl Surrogate {
    pub fn sigmoid(alpha: f64) -> Self {
        Self::Sigmoid { alpha }
    }
    pub fn atan(alpha: f64) -> Self {
        Self::Atan { alpha }
    }
    pub fn rect(width: f64) -> Self {
        Self::Rect { width }
    }
    pub fn triangle(width: f64) -> Self {
        Self::Triangle { width }
    }
    pub fn fast_sigmoid(alpha: f64) -> Self {
        Self::FastSigmoid { alpha }
    }
    pub fn piecewise_quadratic(alpha: f64) -> Self {
        Self::PiecewiseQuadratic { alpha }
    }

    /// The built-in surrogates by name, with their shape parameter's name: what bindings
    /// (Python) offer.
    pub const BUILT_IN: [(&'static str, &'static str); 6] = [
        ("sigmoid", "alpha"),
        ("atan", "alpha"),
        ("rect", "width"),
        ("triangle", "width"),
        ("fast_sigmoid", "alpha"),
        ("piecewise_quadratic", "alpha"),
    ];

    /// The built-in surrogate `name` ([`Surrogate::BUILT_IN`]) with shape parameter
    /// `value`, checked.
    pub fn named(name: &str, value: f64) -> Result<Self, String> {
        let s = match name {
            "sigmoid" => Self::sigmoid(value),
            "atan" => Self::atan(value),
            "rect" => Self::rect(value),
            "triangle" => Self::triangle(value),
            "fast_sigmoid" => Self::fast_sigmoid(value),
            "piecewise_quadratic" => Self::piecewise_quadratic(value),
            _ => {
                let known: Vec<&str> = Self::BUILT_IN.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "unknown surrogate `{name}`; the built-in ones: {}",
                    known.join(", ")
                ));
            }
        };
        s.check()?;
        Ok(s)
    }

    /// The surrogate's shape parameter, named as in its constructor.
    fn parameter(&self) -> Option<(&'static str, f64)> {
        match *self {
            Self::Sigmoid { alpha }
            | Self::Atan { alpha }
            | Self::FastSigmoid { alpha }
            | Self::PiecewiseQuadratic { alpha } => Some(("alpha", alpha)),
            Self::Rect { width } | Self::Triangle { width } => Some(("width", width)),
            Self::Custom(_) => None,
        }
    }

    /// Checks the shape parameter; the message says what is wrong.
    pub fn check(&self) -> Result<(), String> {
        match self.parameter() {
            Some((name, v)) if !(v.is_finite() && v > 0.0) => {
                Err(format!("{name} must be positive and finite, got {v}"))
            }
            Some(_) => Ok(()),
            None => {
                let Self::Custom(c) = self else {
                    unreachable!("only custom surrogates have no parameter")
                };
                let g = c.graph();
                let ok = g.nodes().into_iter().all(|n| match g.op(n) {
                    Op::Leaf(l) => l == Leaf::Input(0),
                    Op::Sink(s) => s == Sink::Output(0),
                    Op::Spike(_) => false,
                    _ => true,
                });
                if ok && g.sink_value(Sink::Output(0)).is_some() {
                    Ok(())
                } else {
                    Err("a custom derivative must be an expression of `h` alone, without spikes, params or states".into())
                }
            }
        }
    }

    /// The surrogate derivative at `h`, evaluated directly (independently of
    /// [`Surrogate::emit_derivative`], so each checks the other).
    pub fn derivative(&self, h: f64) -> f64 {
        match *self {
            Self::Sigmoid { alpha } => {
                let s = 1.0 / (1.0 + (-alpha * h).exp());
                alpha * s * (1.0 - s)
            }
            Self::Atan { alpha } => alpha / 2.0 / (1.0 + (PI / 2.0 * alpha * h).powi(2)),
            Self::Rect { width } => f64::from(u8::from(h.abs() < width)),
            Self::Triangle { width } => (1.0 - h.abs() / width).max(0.0),
            Self::FastSigmoid { alpha } => 1.0 / (1.0 + alpha * h.abs()).powi(2),
            Self::PiecewiseQuadratic { alpha } => (alpha - alpha * alpha * h.abs()).max(0.0),
            Self::Custom(ref c) => crate::ir::eval::eval_f64(c.graph(), |_| h)
                .first()
                .map_or(f64::NAN, |(_, v)| *v),
        }
    }

    /// Emits the derivative at `h` into `g`.
    pub fn emit_derivative(&self, g: &mut Graph, h: NodeId) -> NodeId {
        match *self {
            Self::Sigmoid { alpha } => {
                let a = g.constant(alpha);
                let ah = g.binary(Binary::Mul, a, h);
                let s = g.unary(Unary::Sigmoid, ah);
                let one = g.constant(1.0);
                let oms = g.binary(Binary::Sub, one, s);
                let as_ = g.binary(Binary::Mul, a, s);
                g.binary(Binary::Mul, as_, oms)
            }
            Self::Atan { alpha } => {
                let k = g.constant(PI / 2.0 * alpha);
                let kh = g.binary(Binary::Mul, k, h);
                let sq = g.binary(Binary::Mul, kh, kh);
                let one = g.constant(1.0);
                let den = g.binary(Binary::Add, one, sq);
                let num = g.constant(alpha / 2.0);
                g.binary(Binary::Div, num, den)
            }
            Self::Rect { width } => {
                let a = g.unary(Unary::Abs, h);
                let w = g.constant(width);
                let inside = g.cmp(Cmp::Lt, a, w);
                let one = g.constant(1.0);
                let zero = g.constant(0.0);
                g.select(inside, one, zero)
            }
            Self::Triangle { width } => {
                let a = g.unary(Unary::Abs, h);
                let k = g.constant(1.0 / width);
                let ka = g.binary(Binary::Mul, a, k);
                let one = g.constant(1.0);
                above_zero(g, one, ka)
            }
            Self::FastSigmoid { alpha } => {
                let (one, den) = one_plus_scaled_abs(g, h, alpha);
                let sq = g.binary(Binary::Mul, den, den);
                g.binary(Binary::Div, one, sq)
            }
            Self::PiecewiseQuadratic { alpha } => {
                let a = g.unary(Unary::Abs, h);
                let k = g.constant(alpha * alpha);
                let ka = g.binary(Binary::Mul, k, a);
                let al = g.constant(alpha);
                above_zero(g, al, ka)
            }
            Self::Custom(ref c) => {
                let (_, sinks) = g.inline(c.graph(), &mut |_, _| h);
                sinks[0].1
            }
        }
    }

    /// Emits a function whose derivative is the surrogate (the "smooth variant" of
    /// `spike`), or `None` for a custom surrogate, whose primitive is unknown.
    pub fn emit_primitive(&self, g: &mut Graph, h: NodeId) -> Option<NodeId> {
        // `u - u * |u| * k + c` with `u = clamp(h, -r, r)`: the primitive of the window
        // shapes (triangle, piecewise quadratic) and, with k = 0, of rect.
        fn clamped_quadratic(g: &mut Graph, h: NodeId, r: f64, lin: f64, k: f64, c: f64) -> NodeId {
            let lo = g.constant(-r);
            let hi = g.constant(r);
            let u = g.add(Op::Clamp, &[h, lo, hi]);
            let l = g.constant(lin);
            let lu = g.binary(Binary::Mul, l, u);
            let a = g.unary(Unary::Abs, u);
            let uu = g.binary(Binary::Mul, u, a);
            let kk = g.constant(k);
            let q = g.binary(Binary::Mul, kk, uu);
            let d = g.binary(Binary::Sub, lu, q);
            let cc = g.constant(c);
            g.binary(Binary::Add, d, cc)
        }
        Some(match *self {
            Self::Sigmoid { alpha } => {
                let a = g.constant(alpha);
                let ah = g.binary(Binary::Mul, a, h);
                g.unary(Unary::Sigmoid, ah)
            }
            Self::Atan { alpha } => {
                let k = g.constant(PI / 2.0 * alpha);
                let kh = g.binary(Binary::Mul, k, h);
                let at = g.unary(Unary::Atan, kh);
                let inv = g.constant(1.0 / PI);
                let sc = g.binary(Binary::Mul, at, inv);
                let half = g.constant(0.5);
                g.binary(Binary::Add, sc, half)
            }
            Self::Rect { width } => clamped_quadratic(g, h, width, 1.0, 0.0, width),
            Self::Triangle { width } => {
                clamped_quadratic(g, h, width, 1.0, 0.5 / width, width / 2.0)
            }
            Self::PiecewiseQuadratic { alpha } => {
                clamped_quadratic(g, h, 1.0 / alpha, alpha, alpha * alpha / 2.0, 0.5)
            }
            Self::FastSigmoid { alpha } => {
                let (_, den) = one_plus_scaled_abs(g, h, alpha);
                g.binary(Binary::Div, h, den)
            }
            Self::Custom(_) => return None,
        })
    }
}

/// `max(top - x, 0)`: the window shapes' derivatives.
fn above_zero(g: &mut Graph, top: NodeId, x: NodeId) -> NodeId {
    let d = g.binary(Binary::Sub, top, x);
    let zero = g.constant(0.0);
    g.binary(Binary::Max, d, zero)
}

/// The constant `1` and `1 + alpha * |h|`, the fast sigmoid's denominator.
fn one_plus_scaled_abs(g: &mut Graph, h: NodeId, alpha: f64) -> (NodeId, NodeId) {
    let a = g.unary(Unary::Abs, h);
    let k = g.constant(alpha);
    let ka = g.binary(Binary::Mul, k, a);
    let one = g.constant(1.0);
    (one, g.binary(Binary::Add, one, ka))
}

impl fmt::Display for Surrogate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Sigmoid { .. } => "sigmoid",
            Self::Atan { .. } => "atan",
            Self::Rect { .. } => "rect",
            Self::Triangle { .. } => "triangle",
            Self::FastSigmoid { .. } => "fast_sigmoid",
            Self::PiecewiseQuadratic { .. } => "piecewise_quadratic",
            Self::Custom(c) => return write!(f, "custom(dh = {})", c.text),
        };
        let (p, v) = self.parameter().unwrap_or(("", 0.0));
        write!(f, "{name}({p} = {v})")
    }
}
