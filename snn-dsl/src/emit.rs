//! Code generation: the neuron's type, its `Default`, setters and `Neuron` impl.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{format_ident, quote};
use syn::{Attribute, Expr, ItemFn, ReturnType, Type};

use crate::attrs::{Args, Errors, unknown_key};
use crate::signature::{self, Decl, Init, Role, Shape};
use crate::step::Step;
use crate::surrogate::{self, Surrogate};

/// `paper_lif` -> `PaperLif`.
fn pascal(name: &str) -> String {
    name.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

/// The text of `///` comments.
fn doc_text(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .map(|l| l.strip_prefix(' ').map(str::to_string).unwrap_or(l))
        .collect();
    lines.join("\n").trim().to_string()
}

/// Every identifier in a token stream.
fn idents(ts: TokenStream, out: &mut Vec<String>) {
    for t in ts {
        match t {
            TokenTree::Ident(i) => out.push(i.to_string()),
            TokenTree::Group(g) => idents(g.stream(), out),
            _ => {}
        }
    }
}

/// `crate = path` and the other options of `#[neuron(..)]` / `#[neuron_helper(..)]`.
struct Options {
    krate: TokenStream,
    surrogate: Option<Surrogate>,
    /// Whether a surrogate was given (even one with errors, reported already).
    surrogate_given: bool,
}

fn options(attr: TokenStream, allow_surrogate: bool, errors: &mut Errors) -> Options {
    let args = errors
        .take(syn::parse2::<Args>(attr))
        .map(|a| a.0)
        .unwrap_or_default();
    let mut krate = quote!(::snn::codegen);
    for a in args.iter().filter(|a| a.name() == "crate") {
        if let Some(Expr::Path(p)) = errors.take(a.value()) {
            krate = quote!(#p);
        } else if a.value.is_some() {
            errors.at(
                a.key.span(),
                "`crate` takes a path: `crate = ::snn::codegen`",
            );
        }
    }
    let mut surrogate = None;
    let mut surrogate_given = false;
    for a in &args {
        match a.name().as_str() {
            "crate" => {}
            "surrogate" if allow_surrogate => {
                surrogate_given = true;
                match &a.value {
                    Some(v) => surrogate = errors.take(surrogate::parse(v, &krate)),
                    None => errors.at(
                        a.key.span(),
                        "`surrogate` needs a value, e.g. `surrogate = sigmoid(alpha = 4.0)`",
                    ),
                }
            }
            _ if allow_surrogate => {
                errors.push(unknown_key(&a.key, "neuron", &["surrogate", "crate"]))
            }
            _ => errors.push(unknown_key(&a.key, "neuron_helper", &["crate"])),
        }
    }
    Options {
        krate,
        surrogate,
        surrogate_given,
    }
}

fn with_errors(ts: TokenStream, errors: Errors) -> TokenStream {
    match errors.finish() {
        Some(e) => {
            let e = e.to_compile_error();
            quote! { #ts #e }
        }
        None => ts,
    }
}

pub fn neuron(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let e = syn::Error::new(
                Span::call_site(),
                "`#[neuron]` goes on a function: the neuron's step",
            )
            .to_compile_error();
            return quote! { #item #e };
        }
    };
    let mut errors = Errors::default();
    let opts = options(attr, true, &mut errors);
    let krate = &opts.krate;
    let decls = signature::parse(&func.sig, &mut errors);
    let decls = check_decls(decls, &mut errors);

    let states: Vec<String> = decls
        .iter()
        .filter(|d| matches!(d.role, Role::State { .. }))
        .map(Decl::name)
        .collect();
    let params: Vec<String> = decls
        .iter()
        .filter(|d| matches!(d.role, Role::Param { .. }))
        .map(Decl::name)
        .collect();
    let step = Step::neuron(krate.clone(), states, params, opts.surrogate_given);
    let body = step.block(&func.block, &mut errors);

    // Every state updated exactly once, every input used.
    for d in &decls {
        match d.role {
            Role::State { .. } => {
                let sets: Vec<_> = body.sets.iter().filter(|(s, _)| *s == d.name()).collect();
                match sets.len() {
                    0 => errors.at(d.ident.span(), format!("state `{0}` is never updated; call `{0}.set(new_value)` in the step (`{0}.set({0})` keeps it constant)", d.ident)),
                    1 => {}
                    _ => errors.at(sets[1].1, format!("state `{}` is updated more than once; compute its final value and call `.set` once", d.ident)),
                }
            }
            Role::Input => {
                let mut used = Vec::new();
                let block = &func.block;
                idents(quote!(#block), &mut used);
                if !used.contains(&d.name()) {
                    errors.at(
                        d.ident.span(),
                        format!(
                            "input `{}` is never used; remove it or use it in the step",
                            d.ident
                        ),
                    );
                }
            }
            Role::Param { .. } => {}
        }
    }
    for (k, o) in body.outputs.iter().enumerate() {
        if body.outputs[..k].iter().any(|p| p == o) {
            errors.at(o.span(), format!("output `{o}` is returned twice"));
        }
    }

    let fn_name = func.sig.ident.to_string();
    let ty = format_ident!("{}", pascal(&fn_name), span = func.sig.ident.span());
    let vis = &func.vis;
    let doc = doc_text(&func.attrs);
    let params: Vec<&Decl> = decls
        .iter()
        .filter(|d| matches!(d.role, Role::Param { .. }))
        .collect();

    // The type: params as fields, defaults, setters.
    let fields = params.iter().map(|d| {
        let Role::Param {
            default,
            learnable,
            shape,
        } = d.role
        else {
            unreachable!()
        };
        let ident = &d.ident;
        let text = format!(
            " `{ident}`: {} {}, default {default}.",
            if learnable { "learnable" } else { "fixed" },
            shape_text(shape)
        );
        quote! { #[doc = #text] pub #ident: f64, }
    });
    let defaults = params.iter().map(|d| {
        let Role::Param { default, .. } = d.role else {
            unreachable!()
        };
        let ident = &d.ident;
        quote! { #ident: #default, }
    });
    let setters = params.iter().map(|d| {
        let ident = &d.ident;
        let text = format!(" Sets `{ident}`.");
        quote! { #[doc = #text] #[must_use] pub fn #ident(mut self, value: f64) -> Self { self.#ident = value; self } }
    });
    let surrogate_text = opts
        .surrogate
        .as_ref()
        .map_or("none".to_string(), |s| s.text.clone());
    let api_doc = type_doc(&fn_name, &decls, &body.outputs, &surrogate_text);
    let surrogate_doc = format!(" Replaces the declared surrogate (`{surrogate_text}`) when set.");
    let user_docs = func.attrs.iter().filter(|a| a.path().is_ident("doc"));
    let ty_tokens = quote! {
        #(#user_docs)*
        #[doc = #api_doc]
        #[derive(Clone, Debug, PartialEq)]
        #vis struct #ty {
            #(#fields)*
            #[doc = #surrogate_doc]
            pub surrogate: ::core::option::Option<#krate::Surrogate>,
        }

        impl ::core::default::Default for #ty {
            fn default() -> Self {
                Self { #(#defaults)* surrogate: ::core::option::Option::None }
            }
        }

        impl #ty {
            /// The neuron's name in its IR (and in generated kernels).
            pub const NAME: &'static str = #fn_name;

            /// The neuron with its declared defaults.
            pub fn new() -> Self {
                <Self as ::core::default::Default>::default()
            }

            #(#setters)*

            /// Uses `surrogate` instead of the declared one.
            #[must_use]
            pub fn with_surrogate(mut self, surrogate: #krate::Surrogate) -> Self {
                self.surrogate = ::core::option::Option::Some(surrogate);
                self
            }
        }
    };
    if errors.finish_ref() {
        // The impl still exists, so the crate's other uses of it raise no errors of their
        // own; its body never runs, the crate does not compile.
        let stub = quote! {
            #ty_tokens
            impl #krate::Neuron for #ty {
                fn ir(&self) -> ::core::result::Result<#krate::NeuronIr, #krate::IrError> {
                    ::core::panic!("`#[neuron]` reported errors")
                }
            }
        };
        return with_errors(stub, errors);
    }

    // The `Neuron` impl: declarations in parameter order, the step, the outputs.
    let b = step.builder();
    let decl_calls = decls.iter().map(|d| {
        let ident = &d.ident;
        let name = d.name();
        match &d.role {
            Role::Input => quote! { let #ident = #b.input(#name); },
            Role::State {
                init: Init::Number(v),
            } => quote! { let #ident = #b.state(#name, #v); },
            Role::State {
                init: Init::Param(p),
            } => quote! { let #ident = #b.state(#name, #p); },
            Role::Param {
                learnable, shape, ..
            } => {
                let shape = match shape {
                    Shape::Scalar => quote!(Scalar),
                    Shape::PerChannel => quote!(PerChannel),
                    Shape::PerNeuron => quote!(PerNeuron),
                };
                quote! {
                    let #ident = #b.param(#name, #krate::ParamDecl {
                        default: self.#ident,
                        shape: #krate::ParamShape::#shape,
                        learnable: #learnable,
                    });
                }
            }
        }
    });
    let outputs = body.outputs.iter().map(|o| {
        let name = o.to_string();
        quote! { #b.output(#name, #o); }
    });
    let stmts = &body.stmts;
    let with_surrogate = match &opts.surrogate {
        Some(s) => {
            let build = &s.build;
            quote! {
                let __snn_owner = __snn_owner.surrogate(match &self.surrogate {
                    ::core::option::Option::Some(s) => s.clone(),
                    ::core::option::Option::None => #build?,
                });
            }
        }
        None => quote! {
            let __snn_owner = match &self.surrogate {
                ::core::option::Option::Some(s) => __snn_owner.surrogate(s.clone()),
                ::core::option::Option::None => __snn_owner,
            };
        },
    };
    let out = quote! {
        #ty_tokens

        impl #krate::Neuron for #ty {
            #[allow(unused_variables, clippy::all)]
            fn ir(&self) -> ::core::result::Result<#krate::NeuronIr, #krate::IrError> {
                let __snn_owner = #krate::NeuronBuilder::new(Self::NAME).doc(#doc);
                #with_surrogate
                {
                    let #b = &__snn_owner;
                    #(#decl_calls)*
                    #stmts
                    #(#outputs)*
                }
                __snn_owner.finish()
            }
        }
    };
    with_errors(out, errors)
}

fn shape_text(s: Shape) -> &'static str {
    match s {
        Shape::Scalar => "scalar",
        Shape::PerChannel => "per-channel",
        Shape::PerNeuron => "per-neuron",
    }
}

/// Names are unique and not reserved, and a state starts from a param declared before it.
/// Returns the declarations that can go into the generated type.
fn check_decls(decls: Vec<Decl>, errors: &mut Errors) -> Vec<Decl> {
    let mut kept: Vec<Decl> = Vec::new();
    for d in decls {
        if kept.iter().any(|e| e.name() == d.name()) {
            errors.at(d.ident.span(), format!("`{}` is declared twice", d.ident));
            continue;
        }
        if matches!(d.role, Role::Param { .. }) && RESERVED.contains(&d.name().as_str()) {
            errors.at(
                d.ident.span(),
                format!(
                    "`{}` is the name of a field or method of the generated type; rename the param",
                    d.ident
                ),
            );
            continue;
        }
        if let Role::State {
            init: Init::Param(p),
        } = &d.role
        {
            let declared = kept
                .iter()
                .any(|e| matches!(e.role, Role::Param { .. }) && e.ident == *p);
            if !declared {
                errors.at(p.span(), format!("state `{}` starts from `{p}`, which is not a param declared before it; declare `#[param(default = ..)] {p}: Param` earlier in the list", d.ident));
            }
        }
        kept.push(d);
    }
    kept
}

/// Names a param cannot take: its setter would clash with the generated type's items or
/// hide the methods of the traits it implements.
const RESERVED: [&str; 13] = [
    "surrogate",
    "new",
    "with_surrogate",
    "NAME",
    "ir",
    "default",
    "clone",
    "clone_from",
    "eq",
    "ne",
    "fmt",
    "to_owned",
    "into",
];

/// The generated type's documentation: what the macro made of the function.
fn type_doc(name: &str, decls: &[Decl], outputs: &[syn::Ident], surrogate: &str) -> String {
    let list = |role: fn(&Role) -> bool, f: &dyn Fn(&Decl) -> String| {
        let v: Vec<String> = decls.iter().filter(|d| role(&d.role)).map(f).collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let inputs = list(|r| matches!(r, Role::Input), &|d| format!("`{}`", d.ident));
    let states = list(|r| matches!(r, Role::State { .. }), &|d| match &d.role {
        Role::State {
            init: Init::Number(v),
        } => format!("`{}` (starts at {v})", d.ident),
        Role::State {
            init: Init::Param(p),
        } => format!("`{}` (starts at `{p}`)", d.ident),
        _ => String::new(),
    });
    let params = list(|r| matches!(r, Role::Param { .. }), &|d| match d.role {
        Role::Param {
            default,
            learnable,
            shape,
        } => {
            format!(
                "`{}` = {default} ({}{})",
                d.ident,
                if learnable { "learnable, " } else { "" },
                shape_text(shape)
            )
        }
        _ => String::new(),
    });
    let outputs: Vec<String> = outputs.iter().map(|o| format!("`{o}`")).collect();
    format!(
        "\n\n# Neuron `{name}` (generated by `#[neuron]`)\n\n\
         - inputs: {inputs}\n- states: {states}\n- params: {params}\n- outputs: {}\n- surrogate: `{surrogate}`\n\n\
         The fields hold the params' values (their defaults in `Default`); `Neuron::ir` gives the \
         step graph.",
        outputs.join(", ")
    )
}

/// `#[neuron_helper]`: `fn f(a: Real, k: f64) -> Real` becomes
/// `fn f<'a>(b: &'a NeuronBuilder, a: impl IntoValue<'a>, k: f64) -> Value<'a>`.
pub fn helper(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let e = syn::Error::new(Span::call_site(), "`#[neuron_helper]` goes on a function")
                .to_compile_error();
            return quote! { #item #e };
        }
    };
    let mut errors = Errors::default();
    let opts = options(attr, false, &mut errors);
    let krate = &opts.krate;
    let lt = quote!('__snn);
    let b = Step::helper(krate.clone()).builder();
    let value_ty = quote!(#krate::Value<#lt>);
    let is = |ty: &Type, name: &str| matches!(ty, Type::Path(p) if p.path.is_ident(name));

    let mut params = Vec::new();
    let mut prologue = Vec::new();
    for arg in &func.sig.inputs {
        match arg {
            syn::FnArg::Typed(pt) => {
                let pat = &pt.pat;
                if is(&pt.ty, "f64") {
                    params.push(quote!(#pat: f64));
                } else {
                    if !is(&pt.ty, "Real") {
                        errors.push(syn::Error::new_spanned(
                            &pt.ty,
                            "helper parameters are `Real` (a traced value) or `f64` (a constant)",
                        ));
                    }
                    // `Real` parameters accept values and numbers alike.
                    params.push(quote!(#pat: impl #krate::IntoValue<#lt>));
                    prologue.push(quote!(let #pat = #krate::IntoValue::into_value(#pat, #b);));
                }
            }
            syn::FnArg::Receiver(r) => errors.push(syn::Error::new_spanned(
                r,
                "a helper is a free function, it takes no `self`",
            )),
        }
    }
    let returns = "a helper returns `Real`, or a tuple of `Real`s: `-> Real`, `-> (Real, Real)`";
    let ret = match &func.sig.output {
        ReturnType::Type(_, ty) if is(ty, "Real") => value_ty.clone(),
        ReturnType::Type(_, ty) => match &**ty {
            Type::Tuple(t) if !t.elems.is_empty() && t.elems.iter().all(|e| is(e, "Real")) => {
                let elems = t.elems.iter().map(|_| value_ty.clone());
                quote!((#(#elems),*))
            }
            other => {
                errors.push(syn::Error::new_spanned(other, returns));
                value_ty.clone()
            }
        },
        ReturnType::Default => {
            errors.at(func.sig.ident.span(), returns);
            value_ty.clone()
        }
    };
    if !func.sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &func.sig.generics,
            "a helper cannot be generic",
        ));
    }
    let step = Step::helper(krate.clone());
    let body = step.block(&func.block, &mut errors);
    let (vis, name, attrs) = (&func.vis, &func.sig.ident, &func.attrs);
    // With errors, only the signature matters (for the callers' sake): the crate does not
    // compile anyway.
    let block = if errors.finish_ref() {
        quote! { ::core::panic!("`#[neuron_helper]` reported errors") }
    } else {
        let (stmts, tail) = (&body.stmts, &body.tail);
        quote! { #(#prologue)* #stmts #tail }
    };
    let out = quote! {
        #(#attrs)*
        #[allow(clippy::all, unused_variables)]
        #vis fn #name<#lt>(#b: &#lt #krate::NeuronBuilder, #(#params),*) -> #ret {
            #block
        }
    };
    with_errors(out, errors)
}
