//! The step function's parameters: inputs, states and params, with their options.

use syn::spanned::Spanned;
use syn::{Expr, FnArg, Ident, Pat, Signature, Type};

use crate::attrs::{Args, Errors, expect_number, number, unknown_key};

#[derive(Clone, Copy, PartialEq)]
pub enum Shape {
    Scalar,
    PerChannel,
    PerNeuron,
}

pub enum Init {
    Number(f64),
    Param(Ident),
}

pub enum Role {
    Input,
    State {
        init: Init,
    },
    Param {
        default: f64,
        learnable: bool,
        shape: Shape,
    },
}

pub struct Decl {
    pub ident: Ident,
    pub role: Role,
}

impl Decl {
    pub fn name(&self) -> String {
        self.ident.to_string()
    }
}

const ROLE_HELP: &str = "a neuron step's parameters are `x: Input`, `v: State` (with `#[state(init = ..)]`) or `p: Param` (with `#[param(default = ..)]`)";

/// Checks the function's shape and reads its parameters.
pub fn parse(sig: &Signature, errors: &mut Errors) -> Vec<Decl> {
    if let Some(c) = &sig.constness {
        errors.at(c.span(), "a neuron step cannot be `const`");
    }
    if let Some(a) = &sig.asyncness {
        errors.at(a.span(), "a neuron step cannot be `async`");
    }
    if let Some(u) = &sig.unsafety {
        errors.at(u.span(), "a neuron step cannot be `unsafe`");
    }
    if !sig.generics.params.is_empty() {
        errors.at(sig.generics.span(), "a neuron step cannot be generic");
    }
    let mut decls = Vec::new();
    for arg in &sig.inputs {
        let FnArg::Typed(pt) = arg else {
            errors.at(
                arg.span(),
                "a neuron step is a free function, it takes no `self`",
            );
            continue;
        };
        let Pat::Ident(p) = &*pt.pat else {
            errors.at(pt.pat.span(), "name each parameter: `x: Input`");
            continue;
        };
        let ident = p.ident.clone();
        let role_name = match &*pt.ty {
            Type::Path(t) if t.qself.is_none() => {
                t.path.segments.last().map(|s| s.ident.to_string())
            }
            _ => None,
        };
        let attrs = &pt.attrs;
        let attr_for = |role: &str, errors: &mut Errors| -> Option<Args> {
            let mut found = None;
            for a in attrs {
                if a.path().is_ident(role) {
                    found = errors.take(a.parse_args::<Args>());
                } else {
                    let allowed = match role {
                        "input" => "inputs take no attributes".to_string(),
                        r => format!("use `#[{r}(..)]`"),
                    };
                    errors.at(
                        a.span(),
                        format!("unexpected attribute on `{ident}`; {allowed}"),
                    );
                }
            }
            found
        };
        let role = match role_name.as_deref() {
            Some("Input") => {
                attr_for("input", errors);
                Role::Input
            }
            Some("State") => {
                let mut init = Init::Number(0.0);
                for arg in attr_for("state", errors).map(|a| a.0).unwrap_or_default() {
                    match arg.name().as_str() {
                        "init" => {
                            if let Some(v) = errors.take(arg.value()) {
                                init = match v {
                                    Expr::Path(p) if p.path.get_ident().is_some() => Init::Param(
                                        p.path
                                            .get_ident()
                                            .cloned()
                                            .unwrap_or_else(|| ident.clone()),
                                    ),
                                    other => match errors.take(number(other).ok_or_else(|| {
                                        syn::Error::new_spanned(other, "`init` is a number literal or a param's name, such as `init = -65.0` or `init = rest`")
                                    })) {
                                        Some(x) => Init::Number(x),
                                        None => init,
                                    },
                                };
                            }
                        }
                        _ => errors.push(unknown_key(&arg.key, "state", &["init"])),
                    }
                }
                Role::State { init }
            }
            Some("Param") => {
                let (mut default, mut learnable, mut shape) = (None, false, Shape::Scalar);
                for arg in attr_for("param", errors).map(|a| a.0).unwrap_or_default() {
                    match arg.name().as_str() {
                        "default" => {
                            if let Some(v) = errors.take(arg.value()) {
                                default = errors.take(expect_number(v, "a param's default"));
                            }
                        }
                        "learnable" => {
                            errors.take(arg.flag());
                            learnable = true;
                        }
                        "per_channel" | "per_neuron" | "scalar" => {
                            errors.take(arg.flag());
                            shape = match arg.name().as_str() {
                                "per_channel" => Shape::PerChannel,
                                "per_neuron" => Shape::PerNeuron,
                                _ => Shape::Scalar,
                            };
                        }
                        _ => errors.push(unknown_key(
                            &arg.key,
                            "param",
                            &[
                                "default",
                                "learnable",
                                "scalar",
                                "per_channel",
                                "per_neuron",
                            ],
                        )),
                    }
                }
                let Some(default) = default else {
                    errors.at(ident.span(), format!("param `{ident}` needs a default: `#[param(default = 0.5)] {ident}: Param`"));
                    continue;
                };
                Role::Param {
                    default,
                    learnable,
                    shape,
                }
            }
            _ => {
                errors.at(pt.ty.span(), ROLE_HELP);
                continue;
            }
        };
        decls.push(Decl { ident, role });
    }
    decls
}
