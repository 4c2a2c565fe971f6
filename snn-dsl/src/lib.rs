//! `#[neuron]`: declare a spiking neuron as a Rust step function.
//!
//! The macro is thin: it parses the function, checks what it can see (every construct of
//! the body, every state updated, every input used, the attribute keys), and emits calls to
//! the builder API of `snn_codegen`, which does the real work. Every mistake is a
//! `syn::Error` pointing at the offending tokens; with errors, the generated type is still
//! emitted (without its `Neuron` impl) so that the rest of the crate's errors make sense.
//!
//! The user-facing documentation, with examples, is on the re-export `snn::neuron`.

mod attrs;
mod emit;
mod signature;
mod step;
mod surrogate;

use proc_macro::TokenStream;

/// Turns a step function into a neuron type. See the `snn` crate's documentation.
#[proc_macro_attribute]
pub fn neuron(attr: TokenStream, item: TokenStream) -> TokenStream {
    emit::neuron(attr.into(), item.into()).into()
}

/// Marks a function as a helper that `#[neuron]` steps may call; its body is written like
/// a step's and is inlined into each step that calls it.
#[proc_macro_attribute]
pub fn neuron_helper(attr: TokenStream, item: TokenStream) -> TokenStream {
    emit::helper(attr.into(), item.into()).into()
}
