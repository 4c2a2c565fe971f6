//! The body of a step: checked construct by construct and rewritten into builder calls.
//!
//! Arithmetic stays as written (the builder's values overload the operators). What Rust
//! cannot overload becomes a method call: comparisons, `if`/`else` (a select: both branches
//! are computed), and the DSL's free functions. Number literals become `f64`.

use std::cell::RefCell;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{BinOp, Block, Expr, ExprLit, Ident, Lit, Pat, Stmt, UnOp};

use crate::attrs::{Errors, number};

/// Methods a traced value supports, with their argument counts.
const METHODS: [(&str, usize); 11] = [
    ("exp", 0),
    ("ln", 0),
    ("sqrt", 0),
    ("tanh", 0),
    ("atan", 0),
    ("sigmoid", 0),
    ("abs", 0),
    ("detach", 0),
    ("min", 1),
    ("max", 1),
    ("clamp", 2),
];

fn supported_methods() -> String {
    let mut m: Vec<String> = METHODS.iter().map(|(n, _)| format!("`.{n}()`")).collect();
    m.extend([
        "`.powf(constant)`".into(),
        "`.powi(constant)`".into(),
        "`.set(value)` on states".into(),
    ]);
    m.join(", ")
}

/// Rewrites step bodies for one neuron (or helper).
pub struct Step {
    krate: TokenStream,
    /// States that `.set` may update (none in helpers).
    states: Vec<String>,
    /// Whether `spike` has a surrogate to use (always true in helpers: the calling neuron's).
    spike_ok: bool,
    helper: bool,
    /// `.set` calls seen: (state, span).
    sets: RefCell<Vec<(String, Span)>>,
}

/// A rewritten body.
pub struct Body {
    /// The statements, as builder calls.
    pub stmts: TokenStream,
    /// The tail: output names (neurons) or the returned expression (helpers).
    pub outputs: Vec<Ident>,
    pub tail: TokenStream,
    pub sets: Vec<(String, Span)>,
}

fn err<T>(span: Span, msg: impl std::fmt::Display) -> syn::Result<T> {
    Err(syn::Error::new(span, msg))
}

impl Step {
    pub fn neuron(krate: TokenStream, states: Vec<String>, spike_ok: bool) -> Self {
        Self {
            krate,
            states,
            spike_ok,
            helper: false,
            sets: RefCell::new(Vec::new()),
        }
    }

    pub fn helper(krate: TokenStream) -> Self {
        Self {
            krate,
            states: Vec::new(),
            spike_ok: true,
            helper: true,
            sets: RefCell::new(Vec::new()),
        }
    }

    /// The identifier the builder is bound to in generated code.
    pub fn builder(&self) -> Ident {
        format_ident!("__snn_b")
    }

    /// `IntoValue::into_value(e, b)`: a value whatever `e` is (a number or a value).
    fn value(&self, e: TokenStream) -> TokenStream {
        let (k, b) = (&self.krate, self.builder());
        quote! { #k::IntoValue::into_value(#e, #b) }
    }

    /// Rewrites a block: `let`s, state updates and a final expression.
    pub fn block(&self, block: &Block, errors: &mut Errors) -> Body {
        let mut stmts = TokenStream::new();
        let mut outputs = Vec::new();
        let mut tail = TokenStream::new();
        let last = block.stmts.len().checked_sub(1);
        let mut has_tail = false;
        for (i, stmt) in block.stmts.iter().enumerate() {
            match stmt {
                Stmt::Local(local) => {
                    let r = self.local(local);
                    if let Some(t) = errors.take(r) {
                        stmts.extend(t);
                    }
                }
                Stmt::Expr(e, Some(_)) => {
                    if let Some(t) = errors.take(self.statement(e)) {
                        stmts.extend(quote! { #t; });
                    }
                }
                Stmt::Expr(e, None) if Some(i) == last => {
                    has_tail = true;
                    if self.helper {
                        if let Some(t) = errors.take(self.helper_tail(e)) {
                            tail = t;
                        }
                    } else if let Some(o) = errors.take(output_names(e)) {
                        outputs = o;
                    }
                }
                Stmt::Expr(e, None) => errors.push(self.expr(e).err().unwrap_or_else(|| {
                    syn::Error::new(e.span(), "expected `;` after this statement")
                })),
                Stmt::Item(item) => errors.at(item.span(), "items (functions, structs, `use`, ..) cannot be declared inside a neuron step; declare them outside (helpers with `#[neuron_helper]`)"),
                Stmt::Macro(m) => errors.at(m.span(), "macros cannot be used inside a neuron step: the body is traced, not run"),
            }
        }
        if !has_tail {
            let what = if self.helper {
                "its result"
            } else {
                "the neuron's output, a named value (`let s = spike(..); s`) or a tuple of them"
            };
            let span = block
                .stmts
                .last()
                .map_or_else(|| block.span(), |s| s.span());
            errors.at(span, format!("the step must end with {what}"));
        }
        Body {
            stmts,
            outputs,
            tail,
            sets: self.sets.borrow().clone(),
        }
    }

    fn local(&self, local: &syn::Local) -> syn::Result<TokenStream> {
        let ident = match &local.pat {
            Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => {
                if let Some(m) = p.mutability {
                    return err(
                        m.span(),
                        "values in a neuron step are immutable; bind a new name with `let` instead of mutating",
                    );
                }
                p.ident.clone()
            }
            Pat::Type(t) => {
                return err(
                    t.ty.span(),
                    "leave out the type: every value in a neuron step is a traced real number",
                );
            }
            other => {
                return err(
                    other.span(),
                    "bind one name: `let h = ..;` (patterns are not supported in a neuron step)",
                );
            }
        };
        let Some(init) = &local.init else {
            return err(local.span(), "give the value at once: `let h = ..;`");
        };
        if let Some((_, diverge)) = &init.diverge {
            return err(
                diverge.span(),
                "`let .. else` is not supported in a neuron step",
            );
        }
        let e = self.expr(&init.expr)?;
        let v = self.value(e);
        let name = ident.to_string();
        Ok(quote! { let #ident = #v.named(#name); })
    }

    /// A statement: only state updates make sense, everything else computes nothing.
    fn statement(&self, e: &Expr) -> syn::Result<TokenStream> {
        match e {
            Expr::MethodCall(m) if m.method == "set" => self.expr(e),
            _ => {
                self.expr(e)?;
                err(
                    e.span(),
                    "this statement computes a value and drops it; bind it with `let` or update a state with `.set(..)`",
                )
            }
        }
    }

    fn helper_tail(&self, e: &Expr) -> syn::Result<TokenStream> {
        match e {
            Expr::Tuple(t) => {
                let items = t
                    .elems
                    .iter()
                    .map(|x| self.expr(x).map(|x| self.value(x)))
                    .collect::<syn::Result<Vec<_>>>()?;
                Ok(quote! { (#(#items),*) })
            }
            other => Ok(self.value(self.expr(other)?)),
        }
    }

    /// Rewrites one expression.
    pub fn expr(&self, e: &Expr) -> syn::Result<TokenStream> {
        let b = self.builder();
        Ok(match e {
            Expr::Lit(ExprLit { lit, .. }) => match lit {
                Lit::Int(_) | Lit::Float(_) => {
                    let v = number(e).ok_or_else(|| {
                        syn::Error::new(lit.span(), "this number does not fit an f64")
                    })?;
                    quote_spanned! { lit.span()=> #v }
                }
                _ => return err(lit.span(), "only numbers can be used in a neuron step"),
            },
            Expr::Path(p) => {
                if p.qself.is_some() {
                    return err(
                        p.span(),
                        "qualified paths are not supported in a neuron step",
                    );
                }
                quote! { #p }
            }
            Expr::Paren(p) => {
                let inner = self.expr(&p.expr)?;
                quote! { (#inner) }
            }
            Expr::Group(g) => self.expr(&g.expr)?,
            Expr::Unary(u) => match u.op {
                UnOp::Neg(_) => {
                    let inner = self.expr(&u.expr)?;
                    quote! { (-#inner) }
                }
                UnOp::Not(t) => {
                    return err(
                        t.span(),
                        "`!` is not supported; swap the branches of the `if`, or use `1.0 - s` for a spike",
                    );
                }
                _ => {
                    return err(
                        u.span(),
                        "references and dereferences are not supported in a neuron step",
                    );
                }
            },
            Expr::Binary(bin) => {
                let l = self.expr(&bin.left)?;
                let r = self.expr(&bin.right)?;
                let cmp = |m: &str| {
                    let m = Ident::new(m, bin.op.span());
                    let lv = self.value(l.clone());
                    quote! { #lv.#m(#r) }
                };
                match bin.op {
                    BinOp::Add(_) | BinOp::Sub(_) | BinOp::Mul(_) | BinOp::Div(_) => {
                        let op = bin.op;
                        quote! { (#l #op #r) }
                    }
                    BinOp::Lt(_) => cmp("lt"),
                    BinOp::Le(_) => cmp("le"),
                    BinOp::Gt(_) => cmp("gt"),
                    BinOp::Ge(_) => cmp("ge"),
                    BinOp::Eq(_) => cmp("eq"),
                    BinOp::Ne(_) => cmp("ne"),
                    BinOp::And(_) | BinOp::Or(_) => {
                        return err(
                            bin.op.span(),
                            "`&&` and `||` are not supported; nest `if`s, or combine spikes arithmetically (`a * b`, `a + b - a * b`)",
                        );
                    }
                    BinOp::Rem(_) => {
                        return err(bin.op.span(), "`%` is not supported in a neuron step");
                    }
                    BinOp::AddAssign(_)
                    | BinOp::SubAssign(_)
                    | BinOp::MulAssign(_)
                    | BinOp::DivAssign(_)
                    | BinOp::RemAssign(_) => {
                        return err(
                            bin.op.span(),
                            "values in a neuron step are immutable; bind a new name with `let`, or update a state with `.set(..)`",
                        );
                    }
                    _ => {
                        return err(
                            bin.op.span(),
                            "bitwise operators are not supported in a neuron step",
                        );
                    }
                }
            }
            Expr::MethodCall(m) => {
                let name = m.method.to_string();
                let args: Vec<&Expr> = m.args.iter().collect();
                if name == "set" {
                    return self.set(m, &args);
                }
                let recv = self.value(self.expr(&m.receiver)?);
                let method = &m.method;
                match name.as_str() {
                    "powf" | "powi" => {
                        let [arg] = args[..] else {
                            return err(
                                m.span(),
                                format!("`.{name}` takes one argument, the exponent"),
                            );
                        };
                        let Some(exponent) = number(arg) else {
                            return err(
                                arg.span(),
                                format!(
                                    "the exponent of `.{name}` must be a constant number, such as `.{name}(2.0)`; for a traced exponent write `(y * x.ln()).exp()`"
                                ),
                            );
                        };
                        quote_spanned! { method.span()=> #recv.powf(#exponent) }
                    }
                    _ => {
                        let Some(&(_, arity)) = METHODS.iter().find(|(n, _)| *n == name) else {
                            let hint = match name.as_str() {
                                "log" => " (the natural logarithm is `.ln()`)".to_string(),
                                "pow" => " (use `.powf(constant)`)".to_string(),
                                _ => String::new(),
                            };
                            return err(
                                method.span(),
                                format!(
                                    "unknown method `.{name}()`{hint}; a neuron step supports {}",
                                    supported_methods()
                                ),
                            );
                        };
                        if args.len() != arity {
                            return err(
                                m.span(),
                                format!("`.{name}` takes {arity} argument(s), got {}", args.len()),
                            );
                        }
                        let args = args
                            .iter()
                            .map(|a| self.expr(a))
                            .collect::<syn::Result<Vec<_>>>()?;
                        quote_spanned! { method.span()=> #recv.#method(#(#args),*) }
                    }
                }
            }
            Expr::Call(call) => {
                let Expr::Path(func) = &*call.func else {
                    return err(
                        call.func.span(),
                        "only named functions can be called in a neuron step",
                    );
                };
                let args = call
                    .args
                    .iter()
                    .map(|a| self.expr(a))
                    .collect::<syn::Result<Vec<_>>>()?;
                let name = func
                    .path
                    .get_ident()
                    .map(|i| i.to_string())
                    .unwrap_or_default();
                let one = |f: &str| -> syn::Result<TokenStream> {
                    let [a] = &args[..] else {
                        return err(call.span(), format!("`{f}` takes one argument"));
                    };
                    let m = Ident::new(f, func.span());
                    let v = self.value(a.clone());
                    Ok(quote! { #v.#m() })
                };
                match name.as_str() {
                    "spike" => {
                        if !self.spike_ok {
                            return err(
                                func.span(),
                                "`spike` needs a surrogate gradient: add one to the neuron, e.g. `#[neuron(surrogate = sigmoid(alpha = 4.0))]`",
                            );
                        }
                        let [h] = &args[..] else {
                            return err(
                                call.span(),
                                "`spike` takes one argument, the distance above threshold: `spike(v - threshold)`",
                            );
                        };
                        quote_spanned! { func.span()=> #b.spike(#h) }
                    }
                    "detach" | "sigmoid" => one(&name)?,
                    "select" => {
                        let [c, x, y] = &args[..] else {
                            return err(
                                call.span(),
                                "`select` takes three arguments: `select(condition, if_true, if_false)`",
                            );
                        };
                        let c = self.value(c.clone());
                        quote! { #c.select(#x, #y) }
                    }
                    // Anything else is a helper, which gets the builder first.
                    _ => quote! { #func(#b, #(#args),*) },
                }
            }
            Expr::If(i) => self.if_else(i)?,
            Expr::ForLoop(l) => {
                return err(
                    l.for_token.span(),
                    "loops are not supported in a neuron step: the step is one time step of one neuron; unroll a fixed loop by hand or move it into a helper",
                );
            }
            Expr::While(l) => {
                return err(
                    l.while_token.span(),
                    "loops are not supported in a neuron step: the step is one time step of one neuron",
                );
            }
            Expr::Loop(l) => {
                return err(
                    l.loop_token.span(),
                    "loops are not supported in a neuron step: the step is one time step of one neuron",
                );
            }
            Expr::Return(r) => {
                return err(
                    r.span(),
                    "`return` is not supported in a neuron step; end the step with its output as the last expression",
                );
            }
            Expr::Match(m) => {
                return err(
                    m.match_token.span(),
                    "`match` is not supported in a neuron step; use `if` on a comparison (it becomes a select)",
                );
            }
            Expr::Assign(a) => {
                return err(
                    a.span(),
                    "values in a neuron step are immutable; bind a new name with `let`, or update a state with `.set(..)`",
                );
            }
            Expr::Cast(c) => {
                return err(
                    c.as_token.span(),
                    "casts are not needed: every value in a neuron step is a real number",
                );
            }
            Expr::Block(b) => {
                return err(
                    b.span(),
                    "blocks are not supported in a neuron step; use `let` bindings",
                );
            }
            Expr::Closure(c) => {
                return err(
                    c.span(),
                    "closures are not supported in a neuron step; write a `#[neuron_helper]` function",
                );
            }
            Expr::Macro(m) => {
                return err(
                    m.span(),
                    "macros cannot be used inside a neuron step: the body is traced, not run",
                );
            }
            Expr::Tuple(t) => {
                return err(
                    t.span(),
                    "tuples can only be the step's final expression (its outputs)",
                );
            }
            other => {
                return err(
                    other.span(),
                    "this expression is not supported in a neuron step",
                );
            }
        })
    }

    fn set(&self, m: &syn::ExprMethodCall, args: &[&Expr]) -> syn::Result<TokenStream> {
        let state = match &*m.receiver {
            Expr::Path(p) => p.path.get_ident().cloned(),
            _ => None,
        };
        let Some(state) = state else {
            return err(
                m.receiver.span(),
                "only a state can be set: `v.set(new_value)` where `v: State`",
            );
        };
        if self.helper {
            return err(
                m.method.span(),
                "helpers compute values; update states in the neuron's step",
            );
        }
        if !self.states.contains(&state.to_string()) {
            return err(
                state.span(),
                format!(
                    "`{state}` is not a state, so it cannot be `set`; declare it as `{state}: State`"
                ),
            );
        }
        let [arg] = args else {
            return err(m.span(), "`.set` takes one argument, the new value");
        };
        let v = self.expr(arg)?;
        self.sets
            .borrow_mut()
            .push((state.to_string(), m.method.span()));
        let method = &m.method;
        Ok(quote! { #state.#method(#v) })
    }

    /// `if c { a } else { b }` becomes `select(c, a, b)`.
    fn if_else(&self, i: &syn::ExprIf) -> syn::Result<TokenStream> {
        let cond = self.value(self.expr(&i.cond)?);
        let branch = |block: &Block| -> syn::Result<TokenStream> {
            match &block.stmts[..] {
                [Stmt::Expr(e, None)] => self.expr(e),
                _ => err(
                    block.span(),
                    "an `if` on traced values becomes a select, which computes both branches; each branch must be a single expression (no `let`, no `.set`)",
                ),
            }
        };
        let then = branch(&i.then_branch)?;
        let Some((_, else_branch)) = &i.else_branch else {
            return err(
                i.if_token.span(),
                "an `if` in a neuron step needs an `else`: it chooses between two values",
            );
        };
        let otherwise = match &**else_branch {
            Expr::Block(b) => branch(&b.block)?,
            Expr::If(nested) => self.if_else(nested)?,
            other => return err(other.span(), "expected a block"),
        };
        Ok(quote! { #cond.select(#then, #otherwise) })
    }
}

/// The names of the outputs in a step's final expression.
fn output_names(e: &Expr) -> syn::Result<Vec<Ident>> {
    let name = |e: &Expr| match e {
        Expr::Path(p) => p.path.get_ident().cloned(),
        _ => None,
    };
    let hint = "end the step with its output as a named value: `let s = spike(..); s`, or a tuple of named values `(s, v)`; the names become the outputs' names";
    match e {
        Expr::Tuple(t) => t
            .elems
            .iter()
            .map(|x| name(x).ok_or_else(|| syn::Error::new(x.span(), hint)))
            .collect(),
        Expr::Paren(p) => output_names(&p.expr),
        other => name(other)
            .map(|i| vec![i])
            .ok_or_else(|| syn::Error::new(other.span(), hint)),
    }
}
