//! `key = value` lists: the arguments of `#[neuron(..)]`, `#[param(..)]` and `#[state(..)]`.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ExprUnary, Ident, Lit, Token, UnOp};

/// One `key` or `key = value` item.
pub struct Arg {
    pub key: Ident,
    pub value: Option<Expr>,
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        // `crate` is a keyword: accept it as a key.
        let key = if input.peek(Token![crate]) {
            let t: Token![crate] = input.parse()?;
            Ident::new("crate", t.span)
        } else {
            input.parse()?
        };
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(input.parse()?)
        } else {
            None
        };
        Ok(Arg { key, value })
    }
}

/// Parses `a = 1, b, c = x` into its items.
pub struct Args(pub Vec<Arg>);

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let list = Punctuated::<Arg, Token![,]>::parse_terminated(input)?;
        Ok(Args(list.into_iter().collect()))
    }
}

impl Arg {
    pub fn name(&self) -> String {
        self.key.to_string()
    }

    /// The value, which this key requires.
    pub fn value(&self) -> syn::Result<&Expr> {
        self.value.as_ref().ok_or_else(|| {
            syn::Error::new(
                self.key.span(),
                format!("`{}` needs a value: `{} = ..`", self.key, self.key),
            )
        })
    }

    /// Errors if the key was given a value (it is a flag).
    pub fn flag(&self) -> syn::Result<()> {
        match &self.value {
            None => Ok(()),
            Some(v) => Err(syn::Error::new(
                v.span(),
                format!("`{}` is a flag and takes no value", self.key),
            )),
        }
    }
}

/// The error for a key that is not one of `known`.
pub fn unknown_key(key: &Ident, what: &str, known: &[&str]) -> syn::Error {
    syn::Error::new(
        key.span(),
        format!(
            "unknown {what} option `{key}`; expected one of: {}",
            known.join(", ")
        ),
    )
}

/// A number written in the source: `2`, `0.5`, `-65.0`.
pub fn number(e: &Expr) -> Option<f64> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Float(f), ..
        }) => f.base10_parse().ok(),
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => i.base10_parse::<i64>().ok().map(|i| i as f64),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) => number(expr).map(|x| -x),
        Expr::Paren(p) => number(&p.expr),
        Expr::Group(g) => number(&g.expr),
        _ => None,
    }
}

/// A number, or an error at `e` that names what was expected.
pub fn expect_number(e: &Expr, what: &str) -> syn::Result<f64> {
    number(e).ok_or_else(|| {
        syn::Error::new(
            e.span(),
            format!("{what} must be a number literal, such as `0.5`"),
        )
    })
}

/// Collects errors so that all of them are reported at once.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub fn at(&mut self, span: Span, msg: impl std::fmt::Display) {
        self.push(syn::Error::new(span, msg));
    }

    /// Keeps the value of `r`, recording its error.
    pub fn take<T>(&mut self, r: syn::Result<T>) -> Option<T> {
        r.map_err(|e| self.push(e)).ok()
    }

    /// Whether any error was recorded.
    pub fn finish_ref(&self) -> bool {
        self.0.is_some()
    }

    pub fn finish(self) -> Option<syn::Error> {
        self.0
    }
}
