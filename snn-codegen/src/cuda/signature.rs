//! What a kernel takes: its C parameter list as data, so that the runtime binds arguments by
//! name or role, with checked types, instead of ordering them by hand.
//!
//! Generated kernels get their signature from the emitter, with each argument's role in the
//! neuron. Hand-written kernels get theirs by parsing the `extern "C" __global__`
//! declarations of their `.cu` source ([`parse_kernels`]): the declaration is the one place
//! their parameters are written down.

use std::fmt;

use thiserror::Error;

use crate::dtype::Dtype;

/// Which kernel of a neuron.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelKind {
    /// Outputs, final states, and the memory plan's saves.
    ForwardTrain,
    /// Outputs and final states only.
    ForwardInference,
    /// One reverse pass through time: input gradients, state adjoints, param gradients.
    Backward,
}

impl KernelKind {
    pub fn suffix(self) -> &'static str {
        match self {
            KernelKind::ForwardTrain => "forward_train",
            KernelKind::ForwardInference => "forward_inference",
            KernelKind::Backward => "backward",
        }
    }
}

impl fmt::Display for KernelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

/// The C type of a kernel argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArgType {
    /// A pointer to elements stored as `dtype`. `mutable`: the kernel writes through it (not
    /// `const`). `restrict`: declared `__restrict__`, so it must not alias any other
    /// argument; without it, a written pointer may be exactly one of the kernel's inputs
    /// (an elementwise kernel working in place), though never overlap one partly.
    Ptr {
        dtype: Dtype,
        mutable: bool,
        restrict: bool,
    },
    /// `float` by value.
    F32,
    /// `double` by value.
    F64,
    /// `int` by value.
    I32,
    /// `long long` by value.
    I64,
    /// `unsigned long long` by value.
    U64,
}

impl ArgType {
    /// The C declaration of a parameter of this type named `name`.
    pub fn declare(self, name: &str) -> String {
        match self {
            ArgType::Ptr {
                dtype,
                mutable,
                restrict,
            } => {
                let cnst = if mutable { "" } else { "const " };
                let rst = if restrict { " __restrict__" } else { "" };
                format!("{cnst}{}*{rst} {name}", ctype(dtype))
            }
            ArgType::F32 => format!("const float {name}"),
            ArgType::F64 => format!("const double {name}"),
            ArgType::I32 => format!("const int {name}"),
            ArgType::I64 => format!("const long long {name}"),
            ArgType::U64 => format!("const unsigned long long {name}"),
        }
    }
}

impl fmt::Display for ArgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgType::Ptr { dtype, mutable, .. } => {
                write!(
                    f,
                    "{} {dtype} tensor",
                    if *mutable { "a written" } else { "an" }
                )
            }
            ArgType::F32 => f.write_str("an f32 value"),
            ArgType::F64 => f.write_str("an f64 value"),
            ArgType::I32 => f.write_str("an i32 value"),
            ArgType::I64 => f.write_str("an i64 value"),
            ArgType::U64 => f.write_str("a u64 value"),
        }
    }
}

/// The C type a tensor of `d` is stored as (half precisions as raw 16-bit patterns).
pub fn ctype(d: Dtype) -> &'static str {
    match d {
        Dtype::F64 => "double",
        Dtype::F32 => "float",
        Dtype::F16 | Dtype::BF16 => "unsigned short",
        Dtype::U8 => "unsigned char",
        Dtype::I8 => "signed char",
        Dtype::U32 => "unsigned",
        Dtype::U64 => "unsigned long long",
    }
}

/// What an argument means. Indices refer to the neuron's inputs, states, params, outputs
/// and the memory plan's saves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArgRole {
    /// `[T, N]` input `k`.
    Input(usize),
    /// `[T, N]` output `m`.
    Output(usize),
    /// `[T, N]` saved tensor `k`.
    Save(usize),
    /// `[N]` f32 initial state `j`; null: the declared initial value.
    InitState(usize),
    /// `[N]` f32 final state `j`; null: not written.
    FinalState(usize),
    /// Param `p`: a `float` if scalar, else a pointer to its values.
    Param(usize),
    /// `[T, N]` gradient of output `m`.
    OutputGrad(usize),
    /// `[N]` f32 adjoint of final state `j` (from a later chunk); null: zero.
    FinalStateGrad(usize),
    /// `[T, N]` gradient of input `k` (written).
    InputGrad(usize),
    /// `[N]` f32 adjoint of initial state `j` (written); null: not written.
    InitStateGrad(usize),
    /// Gradient of learnable param `p`: with atomic reduction, its values (accumulated
    /// into: zero them first); with deterministic reduction, `[N]` per-element partials
    /// (overwritten) that `snn_reduce_param_grad` sums.
    ParamGrad(usize),
    /// Number of time steps `T`.
    Steps,
    /// Number of elements `N`.
    Elements,
    /// Channels of the layout (`N = batch * channels * inner`).
    Channels,
    /// Inner size of the layout.
    Inner,
    /// `snn_reduce_param_grad`: the per-element partials.
    Partials,
    /// `snn_reduce_param_grad`: the param's gradient values (accumulated into).
    Reduced,
    /// `snn_reduce_param_grad`: the param's shape, 0 scalar, 1 per-channel, 2 per-neuron.
    Shape,
    /// An argument of a hand-written kernel: it has no role in a neuron and is bound by
    /// its name.
    Named,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelArg {
    pub name: String,
    pub role: ArgRole,
    pub ty: ArgType,
}

/// A kernel's name and arguments, in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelSignature {
    pub name: String,
    pub args: Vec<KernelArg>,
}

/// A kernel declaration that [`parse_kernels`] cannot read.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("kernel `{kernel}`: {problem}")]
pub struct SignatureError {
    /// The kernel's name, or the start of the declaration when the name is missing.
    pub kernel: String,
    pub problem: String,
}

/// The signatures of every `extern "C" __global__ void` kernel of a CUDA source, in source
/// order, each argument with [`ArgRole::Named`]. Reads what hand-written kernels use:
/// pointers to `float`, `double`, `snn_bf16` (bf16 bits), `unsigned char`, `unsigned`,
/// `unsigned long long` (optionally `const` and `__restrict__`), and `float`, `double`, `int`, `long long` and
/// `unsigned long long` by value; comments and `__launch_bounds__(..)` are skipped.
/// Anything else (a macro in a parameter list, a 16-bit type, which could be f16 or bf16)
/// is an error naming the kernel and the parameter.
pub fn parse_kernels(source: &str) -> Result<Vec<KernelSignature>, SignatureError> {
    let text = strip_comments(source);
    let marker = "extern \"C\"";
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find(marker) {
        rest = &rest[at + marker.len()..];
        let open = rest.find('(');
        let head = &rest[..open.unwrap_or(rest.len())];
        let err = |kernel: &str, problem: String| SignatureError {
            kernel: kernel.to_string(),
            problem,
        };
        if !head.split_whitespace().any(|w| w == "__global__") {
            // Some other `extern "C"` item (a device function).
            continue;
        }
        // `__launch_bounds__(..)` sits between `void` and the name.
        let (head, after_bounds) = match head.find("__launch_bounds__") {
            Some(b) => {
                let close = rest[b..].find(')').map(|c| b + c + 1);
                let Some(close) = close else {
                    return Err(err(head.trim(), "unclosed `__launch_bounds__(`".into()));
                };
                (&rest[close..], close)
            }
            None => (head, 0),
        };
        let open = match head.find('(') {
            Some(o) => after_bounds + o,
            None if after_bounds == 0 => open.unwrap_or(rest.len()),
            None => return Err(err(head.trim(), "no parameter list".into())),
        };
        let name = rest[after_bounds..open]
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string();
        if name.is_empty() || name == "void" {
            return Err(err(head.trim(), "no kernel name".into()));
        }
        let Some(close) = rest[open..].find(')') else {
            return Err(err(&name, "unclosed parameter list".into()));
        };
        let params = &rest[open + 1..open + close];
        let mut args = Vec::new();
        for param in params.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (ty, arg) = parse_param(param).map_err(|p| err(&name, p))?;
            args.push(KernelArg {
                name: arg,
                role: ArgRole::Named,
                ty,
            });
        }
        rest = &rest[open + close..];
        out.push(KernelSignature { name, args });
    }
    Ok(out)
}

/// One parameter: its type and name.
fn parse_param(param: &str) -> Result<(ArgType, String), String> {
    let spaced = param.replace('*', " * ");
    let words: Vec<&str> = spaced.split_whitespace().collect();
    let Some((&name, words)) = words.split_last() else {
        return Err("an empty parameter".into());
    };
    let valid = |w: &str| w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid(name) || name.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        return Err(format!("cannot read the parameter `{param}`"));
    }
    let pointer = words.iter().filter(|w| **w == "*").count();
    let restrict = words.contains(&"__restrict__");
    let base: Vec<&str> = words
        .iter()
        .copied()
        .filter(|w| !matches!(*w, "const" | "__restrict__" | "*"))
        .collect();
    let mutable = !words
        .iter()
        .take_while(|w| **w != "*")
        .any(|w| *w == "const");
    let base = base.join(" ");
    let unknown = || {
        format!(
            "parameter `{name}` has type `{base}{}`, which kernels launched by the runtime cannot take; \
             use float, double, int, long long or unsigned long long, or a pointer to float, double, \
             snn_bf16, unsigned char, unsigned or unsigned long long",
            if pointer > 0 { "*" } else { "" }
        )
    };
    let ty = match pointer {
        0 => match base.as_str() {
            "float" => ArgType::F32,
            "double" => ArgType::F64,
            "int" => ArgType::I32,
            "long long" | "long long int" => ArgType::I64,
            "unsigned long long" | "unsigned long long int" => ArgType::U64,
            _ => return Err(unknown()),
        },
        1 => {
            let dtype = match base.as_str() {
                "float" => Dtype::F32,
                "double" => Dtype::F64,
                "unsigned char" => Dtype::U8,
                "signed char" => Dtype::I8,
                // The runtime's name for bf16 bits (an `unsigned short` could be f16 too).
                "snn_bf16" => Dtype::BF16,
                "unsigned" | "unsigned int" => Dtype::U32,
                "unsigned long long" | "unsigned long long int" => Dtype::U64,
                _ => return Err(unknown()),
            };
            ArgType::Ptr {
                dtype,
                mutable,
                restrict,
            }
        }
        _ => return Err(format!("parameter `{name}` is a pointer to a pointer")),
    };
    Ok((ty, name.to_string()))
}

/// `source` with `//` and `/* */` comments replaced by spaces.
fn strip_comments(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    loop {
        let line = rest.find("//");
        let block = rest.find("/*");
        match (line, block) {
            (Some(l), b) if b.is_none_or(|b| l < b) => {
                out.push_str(&rest[..l]);
                out.push(' ');
                rest = rest[l..].find('\n').map_or("", |e| &rest[l + e..]);
            }
            (_, Some(b)) => {
                out.push_str(&rest[..b]);
                out.push(' ');
                rest = rest[b + 2..]
                    .find("*/")
                    .map_or("", |e| &rest[b + 2 + e + 2..]);
            }
            _ => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ptr(dtype: Dtype, mutable: bool, restrict: bool) -> ArgType {
        ArgType::Ptr {
            dtype,
            mutable,
            restrict,
        }
    }

    #[test]
    fn declarations_are_read_with_their_types_and_qualifiers() {
        let src = r#"
// A helper the parser must skip.
__device__ float snn_helper(const float* x) { return x[0]; }
extern "C" __global__ void __launch_bounds__(256, 4)
snn_a(const float* __restrict__ x, float* y /* in place */, unsigned char* __restrict__ m,
      const unsigned* labels, const unsigned long long* __restrict__ ids, double* partial,
      const snn_bf16* __restrict__ h, long long n, const int vec, const float eps, double max_norm,
      const unsigned long long seed) {
    y[0] = x[0];
}
extern "C" __global__ void snn_b(float* out) {}
"#;
        let sigs = parse_kernels(src).unwrap();
        assert_eq!(sigs.len(), 2);
        assert_eq!(sigs[0].name, "snn_a");
        let got: Vec<(&str, ArgType)> = sigs[0]
            .args
            .iter()
            .map(|a| (a.name.as_str(), a.ty))
            .collect();
        assert_eq!(
            got,
            [
                ("x", ptr(Dtype::F32, false, true)),
                ("y", ptr(Dtype::F32, true, false)),
                ("m", ptr(Dtype::U8, true, true)),
                ("labels", ptr(Dtype::U32, false, false)),
                ("ids", ptr(Dtype::U64, false, true)),
                ("partial", ptr(Dtype::F64, true, false)),
                ("h", ptr(Dtype::BF16, false, true)),
                ("n", ArgType::I64),
                ("vec", ArgType::I32),
                ("eps", ArgType::F32),
                ("max_norm", ArgType::F64),
                ("seed", ArgType::U64),
            ]
        );
        assert!(sigs[0].args.iter().all(|a| a.role == ArgRole::Named));
        assert_eq!(sigs[1].name, "snn_b");
        assert_eq!(sigs[1].args[0].ty, ptr(Dtype::F32, true, false));
    }

    #[test]
    fn declarations_round_trip_through_their_c_text() {
        let types = [
            ptr(Dtype::F32, false, true),
            ptr(Dtype::U8, true, false),
            ptr(Dtype::U64, false, false),
            ArgType::F32,
            ArgType::F64,
            ArgType::I32,
            ArgType::I64,
            ArgType::U64,
        ];
        let params: Vec<String> = types
            .iter()
            .enumerate()
            .map(|(k, t)| t.declare(&format!("a{k}")))
            .collect();
        let src = format!(
            "extern \"C\" __global__ void k(\n    {}) {{}}",
            params.join(",\n    ")
        );
        let sig = parse_kernels(&src).unwrap().remove(0);
        let got: Vec<ArgType> = sig.args.iter().map(|a| a.ty).collect();
        assert_eq!(got, types);
    }

    #[test]
    fn what_cannot_be_bound_is_an_error_naming_kernel_and_parameter() {
        for (decl, needle) in [
            ("unsigned short* h", "`h` has type `unsigned short*`"),
            ("SNN_ARGS", "parameter `SNN_ARGS` has type"),
            ("float** p", "`p` is a pointer to a pointer"),
            ("char c", "`c` has type `char`"),
        ] {
            let src = format!("extern \"C\" __global__ void snn_k(const float* x, {decl}) {{}}");
            let e = parse_kernels(&src).unwrap_err();
            assert_eq!(e.kernel, "snn_k");
            assert!(e.to_string().contains(needle), "{decl}: {e}");
        }
    }
}
