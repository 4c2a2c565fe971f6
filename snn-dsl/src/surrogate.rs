//! `surrogate = rect(width = 0.5)`: the surrogate a neuron's `spike` uses.

use proc_macro2::TokenStream;
use quote::quote;
use syn::spanned::Spanned;
use syn::{Expr, ExprAssign, ExprCall, ExprClosure, Pat};

use crate::attrs::expect_number;
use crate::step::Step;

/// A parsed surrogate: the expression that builds it and how it reads in docs.
pub struct Surrogate {
    /// An expression of type `Result<Surrogate, IrError>` in the generated code.
    pub build: TokenStream,
    pub text: String,
}

/// The built-in shapes and the name of their parameter.
const SHAPES: [(&str, &str); 6] = [
    ("sigmoid", "alpha"),
    ("atan", "alpha"),
    ("rect", "width"),
    ("triangle", "width"),
    ("fast_sigmoid", "alpha"),
    ("piecewise_quadratic", "alpha"),
];

fn expected() -> String {
    let mut all: Vec<String> = SHAPES
        .iter()
        .map(|(s, p)| format!("`{s}({p} = ..)`"))
        .collect();
    all.push("`custom(|h| ..)`".into());
    all.join(", ")
}

pub fn parse(e: &Expr, krate: &TokenStream) -> syn::Result<Surrogate> {
    let Expr::Call(ExprCall { func, args, .. }) = e else {
        return Err(syn::Error::new(
            e.span(),
            format!("expected a surrogate, one of: {}", expected()),
        ));
    };
    let name = match &**func {
        Expr::Path(p) => p.path.get_ident().map(|i| i.to_string()),
        _ => None,
    };
    let Some(name) = name else {
        return Err(syn::Error::new(
            func.span(),
            format!("expected a surrogate, one of: {}", expected()),
        ));
    };
    if name == "custom" {
        return custom(e, args.iter().collect(), krate);
    }
    let Some(&(shape, param)) = SHAPES.iter().find(|(s, _)| *s == name) else {
        return Err(syn::Error::new(
            func.span(),
            format!(
                "unknown surrogate `{name}`; expected one of: {}",
                expected()
            ),
        ));
    };
    let [arg] = args.iter().collect::<Vec<_>>()[..] else {
        return Err(syn::Error::new(
            e.span(),
            format!("`{shape}` takes one argument, its {param}: `{shape}({param} = ..)`"),
        ));
    };
    // `rect(0.5)` or `rect(width = 0.5)`.
    let value = match arg {
        Expr::Assign(ExprAssign { left, right, .. }) => {
            let key = match &**left {
                Expr::Path(p) => p.path.get_ident().map(|i| i.to_string()),
                _ => None,
            };
            if key.as_deref() != Some(param) {
                return Err(syn::Error::new(
                    left.span(),
                    format!("the parameter of `{shape}` is `{param}`: `{shape}({param} = ..)`"),
                ));
            }
            right
        }
        other => other,
    };
    let v = expect_number(value, &format!("the {param} of `{shape}`"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(syn::Error::new(
            value.span(),
            format!("the {param} of `{shape}` must be positive, got {v}"),
        ));
    }
    let ctor = syn::Ident::new(shape, func.span());
    Ok(Surrogate {
        build: quote! { ::core::result::Result::<_, #krate::IrError>::Ok(#krate::Surrogate::#ctor(#v)) },
        text: format!("{shape}({param} = {v})"),
    })
}

/// `custom(|h| expression)`: the derivative as an expression of `h`, written like a step.
fn custom(e: &Expr, args: Vec<&Expr>, krate: &TokenStream) -> syn::Result<Surrogate> {
    let usage = "a custom surrogate is a closure of `h`: `custom(|h| 1.0 / (1.0 + h * h))`";
    let [Expr::Closure(ExprClosure { inputs, body, .. })] = args[..] else {
        return Err(syn::Error::new(e.span(), usage));
    };
    let h = match inputs.iter().collect::<Vec<_>>()[..] {
        [Pat::Ident(p)] => p.ident.clone(),
        _ => return Err(syn::Error::new(inputs.span(), usage)),
    };
    let step = Step::helper(krate.clone());
    let body_tokens = step.expr(body)?;
    let b = step.builder();
    let text = quote!(#body).to_string();
    Ok(Surrogate {
        build: quote! {
            #krate::Surrogate::custom(|#h| {
                let #b = #h.builder();
                #krate::IntoValue::into_value(#body_tokens, #b)
            })
        },
        text: format!("custom(|{h}| {text})"),
    })
}
