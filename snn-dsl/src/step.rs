//! The body of a step: checked construct by construct and rewritten into builder calls.
//!
//! Arithmetic stays as written (the builder's values overload the operators). What Rust
//! cannot overload becomes a method call: comparisons, `if`/`else` (a select: both branches
//! are computed), and the DSL's free functions. Number literals become `f64`.

use std::cell::RefCell;

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{BinOp, Block, Expr, ExprLit, Ident, Lit, Pat, Stmt, UnOp};

use crate::attrs::{Errors, number};

/// Methods a traced value supports: name, usage.
const METHODS: [(&str, &str); 11] = [
    ("exp", ".exp()"),
    ("ln", ".ln()"),
    ("sqrt", ".sqrt()"),
    ("tanh", ".tanh()"),
    ("atan", ".atan()"),
    ("sigmoid", ".sigmoid()"),
    ("abs", ".abs()"),
    ("detach", ".detach()"),
    ("min", ".min(other)"),
    ("max", ".max(other)"),
    ("clamp", ".clamp(lo, hi)"),
];

fn supported_methods() -> String {
    let mut m: Vec<String> = METHODS.iter().map(|(_, u)| format!("`{u}`")).collect();
    m.extend([
        "`.powf(constant)`".into(),
        "`.powi(constant)`".into(),
        "`.set(value)` on states".into(),
    ]);
    m.join(", ")
}

const NO_LOOPS: &str = "loops are not supported in a neuron step: the step is one time step of one neuron; unroll a fixed loop by hand";
const IMMUTABLE: &str = "values in a neuron step are immutable; bind a new name with `let`, or update a state with `.set(..)`";

/// An error covering all of `node`'s tokens.
fn err<T>(node: impl ToTokens, msg: impl std::fmt::Display) -> syn::Result<T> {
    Err(syn::Error::new_spanned(node, msg))
}

fn ident_of(e: &Expr) -> Option<Ident> {
    match e {
        Expr::Path(p) if p.qself.is_none() => p.path.get_ident().cloned(),
        _ => None,
    }
}

/// A comparison (`a > b`, possibly in parentheses), as written.
fn comparison(e: &Expr) -> Option<String> {
    match e {
        Expr::Paren(p) => comparison(&p.expr),
        Expr::Binary(b)
            if matches!(
                b.op,
                BinOp::Lt(_)
                    | BinOp::Le(_)
                    | BinOp::Gt(_)
                    | BinOp::Ge(_)
                    | BinOp::Eq(_)
                    | BinOp::Ne(_)
            ) =>
        {
            Some(e.to_token_stream().to_string())
        }
        _ => None,
    }
}

/// The error for a call of a path such as `f64::exp(v)`: Rust's functions on numbers
/// cannot take traced values; the step's own operations are methods or its functions.
fn plain_function(func: &syn::ExprPath, call: &syn::ExprCall) -> syn::Error {
    let path = func.to_token_stream().to_string().replace(' ', "");
    let last = func
        .path
        .segments
        .last()
        .map(|s| s.ident.to_string())
        .unwrap_or_default();
    let method = METHODS.iter().find(|(name, _)| *name == last);
    let mut args = call.args.iter().map(|a| a.to_token_stream().to_string());
    let instead = match (method, args.next()) {
        (Some((name, _)), Some(receiver)) => format!(
            "write the traced operation `{receiver}.{name}({})`",
            args.collect::<Vec<_>>().join(", ")
        ),
        _ => format!(
            "use the step's operations ({}), or a `#[neuron_helper]` function",
            supported_methods()
        ),
    };
    syn::Error::new_spanned(
        call,
        format!(
            "`{path}` is a Rust function on plain numbers and cannot take a neuron's traced values: {instead}"
        ),
    )
}

/// The error for an expression a step cannot contain, at its telling tokens.
fn refused(e: &Expr) -> syn::Error {
    let (at, msg): (&dyn ToTokens, &str) = match e {
        Expr::ForLoop(l) => (&l.for_token, NO_LOOPS),
        Expr::While(l) => (&l.while_token, NO_LOOPS),
        Expr::Loop(l) => (&l.loop_token, NO_LOOPS),
        Expr::Return(r) => (
            r,
            "`return` is not supported in a neuron step; end the step with its output as the last expression",
        ),
        Expr::Match(m) => (
            &m.match_token,
            "`match` is not supported in a neuron step; use `if` on a comparison (it becomes a select)",
        ),
        Expr::Cast(c) => (
            c,
            "casts are not needed: every value in a neuron step is a real number",
        ),
        Expr::Block(b) => (
            b,
            "blocks are not supported in a neuron step; use `let` bindings",
        ),
        Expr::Closure(c) => (
            c,
            "closures are not supported in a neuron step; write a `#[neuron_helper]` function",
        ),
        Expr::Macro(m) => (
            m,
            "macros cannot be used inside a neuron step: the body is traced, not run",
        ),
        Expr::Tuple(t) => (
            t,
            "tuples can only be the step's final expression (its outputs)",
        ),
        other => (other, "this expression is not supported in a neuron step"),
    };
    syn::Error::new_spanned(at, msg)
}

/// Rewrites step bodies for one neuron (or helper).
pub struct Step {
    krate: TokenStream,
    /// States that `.set` may update (none in helpers).
    states: Vec<String>,
    /// Params, named in messages about misuse.
    params: Vec<String>,
    /// Whether `spike` has a surrogate to use (always in helpers: the calling neuron's).
    spike_ok: bool,
    helper: bool,
    /// `.set` calls seen: (state, span).
    sets: RefCell<Vec<(String, Span)>>,
    /// States that a `let` has rebound: `.set` on those names would not reach the state.
    shadowed: RefCell<Vec<String>>,
}

/// A rewritten body.
pub struct Body {
    /// The statements, as builder calls.
    pub stmts: TokenStream,
    /// Neurons: the outputs' names.
    pub outputs: Vec<Ident>,
    /// Helpers: the returned expression.
    pub tail: TokenStream,
    pub sets: Vec<(String, Span)>,
}

impl Step {
    pub fn neuron(
        krate: TokenStream,
        states: Vec<String>,
        params: Vec<String>,
        spike_ok: bool,
    ) -> Self {
        Self {
            krate,
            states,
            params,
            spike_ok,
            helper: false,
            sets: RefCell::default(),
            shadowed: RefCell::default(),
        }
    }

    pub fn helper(krate: TokenStream) -> Self {
        Self {
            helper: true,
            ..Self::neuron(krate, Vec::new(), Vec::new(), true)
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
                    if let Some(t) = errors.take(self.local(local)) {
                        stmts.extend(t);
                    }
                }
                // `s;` at the end: the output, with a stray `;`.
                Stmt::Expr(e, Some(semi)) if Some(i) == last && !self.helper && output_names(e).is_ok() => {
                    has_tail = true;
                    errors.push(syn::Error::new_spanned(
                        semi,
                        "the step's output is its last expression, without `;`: remove this `;`",
                    ));
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
                Stmt::Expr(e, None) => errors.push(
                    self.expr(e).err().unwrap_or_else(|| syn::Error::new_spanned(e, "expected `;` after this statement")),
                ),
                Stmt::Item(item) => errors.push(syn::Error::new_spanned(
                    item,
                    "items (functions, structs, `use`, ..) cannot be declared inside a neuron step; declare them outside (helpers with `#[neuron_helper]`)",
                )),
                Stmt::Macro(m) => errors.push(syn::Error::new_spanned(
                    m,
                    "macros cannot be used inside a neuron step: the body is traced, not run",
                )),
            }
        }
        if !has_tail {
            let what = if self.helper {
                "its result".to_string()
            } else {
                "the neuron's output: a named value (`let s = spike(..); s`) or a tuple of them"
                    .to_string()
            };
            errors.push(syn::Error::new(
                block.brace_token.span.close(),
                format!("the step must end with {what}"),
            ));
        }
        Body {
            stmts,
            outputs,
            tail,
            sets: self.sets.borrow().clone(),
        }
    }

    fn local(&self, local: &syn::Local) -> syn::Result<TokenStream> {
        let one = |p: &Pat| -> syn::Result<Ident> {
            match p {
                Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => match p.mutability {
                    Some(m) => err(
                        m,
                        "values in a neuron step are immutable; bind a new name with `let` instead of mutating",
                    ),
                    None => Ok(p.ident.clone()),
                },
                Pat::Type(t) => err(
                    &t.ty,
                    "leave out the type: every value in a neuron step is a traced real number",
                ),
                other => err(
                    other,
                    "bind a name, `let h = ..;`, or a tuple of names, `let (a, b) = helper(..);`",
                ),
            }
        };
        let names: Vec<Ident> = match &local.pat {
            Pat::Tuple(t) => t.elems.iter().map(one).collect::<syn::Result<_>>()?,
            p => vec![one(p)?],
        };
        let Some(init) = &local.init else {
            return err(local, "give the value at once: `let h = ..;`");
        };
        if let Some((_, diverge)) = &init.diverge {
            return err(diverge, "`let .. else` is not supported in a neuron step");
        }
        for n in &names {
            if self.states.contains(&n.to_string()) {
                self.shadowed.borrow_mut().push(n.to_string());
            }
        }
        let e = self.expr(&init.expr)?;
        // In a step, each name also names its value in printed equations and kernels,
        // unless the value already has a name (`let o = h;` keeps `h`). A helper's names
        // stay its own: the caller's `let` names what it returns.
        let bind = |n: &Ident, e: TokenStream| {
            let v = self.value(e);
            if self.helper {
                quote! { let #n = #v; }
            } else {
                let name = n.to_string();
                quote! { let #n = #v.or_named(#name); }
            }
        };
        Ok(if let [n] = &names[..] {
            bind(n, e)
        } else {
            let binds = names.iter().map(|n| bind(n, quote!(#n)));
            quote! { let (#(#names),*) = #e; #(#binds)* }
        })
    }

    /// A statement: only state updates make sense, everything else computes nothing.
    fn statement(&self, e: &Expr) -> syn::Result<TokenStream> {
        match e {
            Expr::MethodCall(m) if m.method == "set" => self.expr(e),
            _ => {
                self.expr(e)?;
                err(
                    e,
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
                        syn::Error::new_spanned(lit, "this number does not fit an f64")
                    })?;
                    quote_spanned! { lit.span()=> #v }
                }
                _ => return err(lit, "only numbers can be used in a neuron step"),
            },
            Expr::Path(p) => {
                if p.qself.is_some() {
                    return err(p, "qualified paths are not supported in a neuron step");
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
                        t,
                        "`!` is not supported; swap the branches of the `if`, or use `1.0 - s` for a spike",
                    );
                }
                _ => {
                    return err(
                        u,
                        "references and dereferences are not supported in a neuron step",
                    );
                }
            },
            Expr::Binary(bin) => self.binary(bin)?,
            Expr::MethodCall(m) => self.method(m)?,
            Expr::Call(call) => {
                let Expr::Path(func) = &*call.func else {
                    return err(
                        &call.func,
                        "only named functions can be called in a neuron step",
                    );
                };
                if func.path.segments.len() > 1 {
                    return Err(plain_function(func, call));
                }
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
                let one = |f: &str, usage: &str| -> syn::Result<TokenStream> {
                    let [a] = &args[..] else {
                        return err(call, format!("`{f}` takes one argument: `{usage}`"));
                    };
                    let m = Ident::new(f, func.span());
                    let v = self.value(a.clone());
                    Ok(quote! { #v.#m() })
                };
                match name.as_str() {
                    "spike" => {
                        if !self.spike_ok {
                            return err(
                                func,
                                "`spike` needs a surrogate gradient: add one to the neuron, e.g. `#[neuron(surrogate = sigmoid(alpha = 4.0))]`",
                            );
                        }
                        let [h] = &args[..] else {
                            return err(
                                call,
                                "`spike` takes one argument, the distance above threshold: `spike(v - threshold)`",
                            );
                        };
                        quote_spanned! { func.span()=> #b.spike(#h) }
                    }
                    "detach" => one("detach", "detach(x)")?,
                    "sigmoid" => one("sigmoid", "sigmoid(x)")?,
                    "select" => {
                        let [c, x, y] = &args[..] else {
                            return err(
                                call,
                                "`select` takes three arguments: `select(condition, if_true, if_false)`",
                            );
                        };
                        let c = self.value(c.clone());
                        quote! { #c.select(#x, #y) }
                    }
                    // Anything else is a `#[neuron_helper]`, which takes the builder first;
                    // calling it through `NeuronHelper` makes a plain function that trait's
                    // error (spanned at the function's name), not an arity error.
                    _ => {
                        // The crate path too, so that every error points at the name.
                        let k: TokenStream = self
                            .krate
                            .clone()
                            .into_iter()
                            .map(|mut t| {
                                t.set_span(func.span());
                                t
                            })
                            .collect();
                        quote_spanned! { func.span()=>
                            #k::NeuronHelper::call(&#func, #b, (#(#args,)*))
                        }
                    }
                }
            }
            Expr::If(i) => self.if_else(i)?,
            Expr::Assign(a) => {
                if let Some(state) =
                    ident_of(&a.left).filter(|s| self.states.contains(&s.to_string()))
                {
                    // Counted as the state's update, so that only this error is reported.
                    self.sets.borrow_mut().push((state.to_string(), a.span()));
                    return err(a, format!("update a state with `.set`: `{state}.set(..)`"));
                }
                return err(a, IMMUTABLE);
            }
            other => return Err(refused(other)),
        })
    }

    fn binary(&self, bin: &syn::ExprBinary) -> syn::Result<TokenStream> {
        let l = self.expr(&bin.left)?;
        let r = self.expr(&bin.right)?;
        let cmp = |m: &str| {
            let m = Ident::new(m, bin.op.span());
            let lv = self.value(l.clone());
            quote! { #lv.#m(#r) }
        };
        Ok(match bin.op {
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
                    bin.op,
                    "`&&` and `||` are not supported; nest `if`s, or combine spikes arithmetically (`a * b`, `a + b - a * b`)",
                );
            }
            BinOp::Rem(_) => return err(bin.op, "`%` is not supported in a neuron step"),
            BinOp::AddAssign(_)
            | BinOp::SubAssign(_)
            | BinOp::MulAssign(_)
            | BinOp::DivAssign(_)
            | BinOp::RemAssign(_) => {
                if let Some(state) =
                    ident_of(&bin.left).filter(|s| self.states.contains(&s.to_string()))
                {
                    self.sets.borrow_mut().push((state.to_string(), bin.span()));
                    return err(
                        bin,
                        format!("update a state with `.set`: `{state}.set(..)`"),
                    );
                }
                return err(bin, IMMUTABLE);
            }
            _ => {
                return err(
                    bin.op,
                    "bitwise operators are not supported in a neuron step",
                );
            }
        })
    }

    fn method(&self, m: &syn::ExprMethodCall) -> syn::Result<TokenStream> {
        let name = m.method.to_string();
        let args: Vec<&Expr> = m.args.iter().collect();
        if name == "set" {
            return self.set(m, &args);
        }
        let recv = self.value(self.expr(&m.receiver)?);
        let method = &m.method;
        // The method and its arguments (their own tokens, for the span of messages).
        let mut call = method.to_token_stream();
        call.extend(m.args.to_token_stream());
        Ok(match name.as_str() {
            "powf" | "powi" => {
                let [arg] = args[..] else {
                    return err(
                        call,
                        format!("`.{name}` takes one argument, the exponent: `.{name}(2.0)`"),
                    );
                };
                let Some(exponent) = number(arg) else {
                    return err(
                        arg,
                        format!(
                            "the exponent of `.{name}` must be a constant number, such as `.{name}(2.0)`; for a traced exponent write `(y * x.ln()).exp()`"
                        ),
                    );
                };
                quote_spanned! { method.span()=> #recv.powf(#exponent) }
            }
            _ => {
                let Some(&(_, usage)) = METHODS.iter().find(|(n, _)| *n == name) else {
                    let hint = match name.as_str() {
                        "log" => " (the natural logarithm is `.ln()`)",
                        "pow" => " (use `.powf(constant)`)",
                        _ => "",
                    };
                    return err(
                        method,
                        format!(
                            "unknown method `.{name}()`{hint}; a neuron step supports {}",
                            supported_methods()
                        ),
                    );
                };
                let arity = usage.matches(',').count() + usize::from(!usage.ends_with("()"));
                if args.len() != arity {
                    return err(
                        call,
                        format!("`.{name}` takes {arity} argument(s): `{usage}`"),
                    );
                }
                let args = args
                    .iter()
                    .map(|a| self.expr(a))
                    .collect::<syn::Result<Vec<_>>>()?;
                quote_spanned! { method.span()=> #recv.#method(#(#args),*) }
            }
        })
    }

    fn set(&self, m: &syn::ExprMethodCall, args: &[&Expr]) -> syn::Result<TokenStream> {
        let Some(state) = ident_of(&m.receiver) else {
            return err(
                &m.receiver,
                "only a state can be set: `v.set(new_value)` where `v: State`",
            );
        };
        if self.helper {
            return err(
                &m.method,
                "helpers compute values; update states in the neuron's step",
            );
        }
        let name = state.to_string();
        if !self.states.contains(&name) {
            let what = if self.params.contains(&name) {
                "a param"
            } else {
                "not a state"
            };
            return err(
                &state,
                format!("`{state}` is {what}; only states (`{state}: State`) can be `set`"),
            );
        }
        // Recorded before the rest is checked, so that the first problem is the only error.
        self.sets.borrow_mut().push((name.clone(), m.method.span()));
        if self.shadowed.borrow().contains(&name) {
            return err(
                &state,
                format!(
                    "`{state}` was rebound by a `let`, so this `.set` would not reach the state; give the `let` another name"
                ),
            );
        }
        let [arg] = args else {
            return err(m, "`.set` takes one argument, the new value: `v.set(h)`");
        };
        if let Some(cmp) = comparison(arg) {
            return err(
                arg,
                format!(
                    "a state holds a number, and `{cmp}` is a condition: store \
                     `select({cmp}, 1.0, 0.0)`, or a spike with its surrogate gradient, \
                     e.g. `spike(a - b)` for `a > b`"
                ),
            );
        }
        let v = self.expr(arg)?;
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
                    block,
                    "an `if` on traced values becomes a select, which computes both branches; each branch must be a single expression (no `let`, no `.set`)",
                ),
            }
        };
        let then = branch(&i.then_branch)?;
        let Some((_, else_branch)) = &i.else_branch else {
            return err(
                i.if_token,
                "an `if` in a neuron step needs an `else`: it chooses between two values",
            );
        };
        let otherwise = match &**else_branch {
            Expr::Block(b) => branch(&b.block)?,
            Expr::If(nested) => self.if_else(nested)?,
            other => return err(other, "expected a block"),
        };
        Ok(quote! { #cond.select(#then, #otherwise) })
    }
}

/// The names of the outputs in a step's final expression.
fn output_names(e: &Expr) -> syn::Result<Vec<Ident>> {
    let hint = "end the step with its output as a named value: `let s = spike(..); s`, or a tuple of named values `(s, v)`; the names become the outputs' names";
    match e {
        Expr::Tuple(t) => t
            .elems
            .iter()
            .map(|x| ident_of(x).ok_or_else(|| syn::Error::new_spanned(x, hint)))
            .collect(),
        Expr::Paren(p) => output_names(&p.expr),
        other => ident_of(other)
            .map(|i| vec![i])
            .ok_or_else(|| syn::Error::new_spanned(other, hint)),
    }
}
