//! The number types the interpreter computes in: `f32`, `f64`, and forward-mode duals.

use std::fmt::Debug;
use std::ops::{Add, Div, Mul, Neg, Sub};

use crate::dtype::Dtype;
use crate::ir::Surrogate;

/// A real number the interpreter can evaluate a step graph in.
pub trait Real:
    Copy
    + Debug
    + PartialOrd
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    fn from_f64(x: f64) -> Self;
    /// The value (for duals, without the tangent).
    fn value(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn atan(self) -> Self;
    fn abs(self) -> Self;
    fn powf(self, e: f64) -> Self;
    fn sigmoid(self) -> Self {
        let one = Self::from_f64(1.0);
        one / (one + (-self).exp())
    }
    /// The Heaviside step `h >= 0`. Duals also carry the surrogate derivative.
    fn spike(self, _surrogate: &Surrogate) -> Self {
        Self::from_f64(if self.value() >= 0.0 { 1.0 } else { 0.0 })
    }
    /// The same value with no derivative (`detach`). Plain numbers carry none anyway.
    fn detach(self) -> Self {
        self
    }
    /// The value as it reads back after being stored in `dtype`.
    fn stored(self, dtype: Dtype) -> Self;
}

/// `Real` for the float types, through their own methods.
macro_rules! float {
    ($($t:ty),*) => {
        $(float!(@impl $t; exp, ln, sqrt, tanh, atan, abs);)*
    };
    (@impl $t:ty; $($method:ident),*) => {
        impl Real for $t {
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            fn value(self) -> f64 {
                f64::from(self)
            }
            $(
                fn $method(self) -> Self {
                    <$t>::$method(self)
                }
            )*
            fn powf(self, e: f64) -> Self {
                <$t>::powf(self, e as $t)
            }
            fn stored(self, dtype: Dtype) -> Self {
                dtype.round(f64::from(self)) as $t
            }
        }
    };
}
float!(f32, f64);

/// A forward-mode dual number `v + d * eps`: evaluating a step graph on duals gives the
/// directional derivative along the seeded tangents, an independent check of the
/// reverse-mode gradients. `spike` differentiates as its surrogate.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Dual {
    pub v: f64,
    pub d: f64,
}

impl Dual {
    pub fn new(v: f64, d: f64) -> Self {
        Self { v, d }
    }
    fn chain(self, v: f64, dv: f64) -> Self {
        Self { v, d: self.d * dv }
    }
}

impl Add for Dual {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self::new(self.v + o.v, self.d + o.d)
    }
}
impl Sub for Dual {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        Self::new(self.v - o.v, self.d - o.d)
    }
}
impl Mul for Dual {
    type Output = Self;
    fn mul(self, o: Self) -> Self {
        Self::new(self.v * o.v, self.d * o.v + self.v * o.d)
    }
}
impl Div for Dual {
    type Output = Self;
    fn div(self, o: Self) -> Self {
        Self::new(self.v / o.v, (self.d * o.v - self.v * o.d) / (o.v * o.v))
    }
}
impl Neg for Dual {
    type Output = Self;
    fn neg(self) -> Self {
        Self::new(-self.v, -self.d)
    }
}

impl Real for Dual {
    fn from_f64(x: f64) -> Self {
        Self::new(x, 0.0)
    }
    fn value(self) -> f64 {
        self.v
    }
    fn exp(self) -> Self {
        let e = self.v.exp();
        self.chain(e, e)
    }
    fn ln(self) -> Self {
        self.chain(self.v.ln(), 1.0 / self.v)
    }
    fn sqrt(self) -> Self {
        let s = self.v.sqrt();
        self.chain(s, 0.5 / s)
    }
    fn tanh(self) -> Self {
        let t = self.v.tanh();
        self.chain(t, 1.0 - t * t)
    }
    fn atan(self) -> Self {
        self.chain(self.v.atan(), 1.0 / (1.0 + self.v * self.v))
    }
    fn abs(self) -> Self {
        self.chain(self.v.abs(), if self.v < 0.0 { -1.0 } else { 1.0 })
    }
    fn powf(self, e: f64) -> Self {
        self.chain(self.v.powf(e), e * self.v.powf(e - 1.0))
    }
    fn sigmoid(self) -> Self {
        let s = 1.0 / (1.0 + (-self.v).exp());
        self.chain(s, s * (1.0 - s))
    }
    fn spike(self, surrogate: &Surrogate) -> Self {
        let s = if self.v >= 0.0 { 1.0 } else { 0.0 };
        self.chain(s, surrogate.derivative(self.v))
    }
    fn detach(self) -> Self {
        Self::new(self.v, 0.0)
    }
    fn stored(self, _: Dtype) -> Self {
        self
    }
}
