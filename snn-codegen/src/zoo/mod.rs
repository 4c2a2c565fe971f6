//! The neuron zoo: common neuron models, built with the builder API.
//!
//! Each type's fields are its parameter values (the IR's param defaults) and structural
//! options; `Default` gives the source's published defaults. They double as worked examples
//! of the builder and as the reference set that tests, benchmarks and the CLI iterate over.

pub mod alif;
pub mod eif;
pub mod integrate_and_fire;
pub mod izhikevich;
pub mod leaky_integrator;
pub mod lif;
pub mod paper_lif;
pub mod plif;

pub use alif::Alif;
pub use eif::Eif;
pub use integrate_and_fire::If;
pub use izhikevich::Izhikevich;
pub use leaky_integrator::LeakyIntegrator;
pub use lif::Lif;
pub use paper_lif::PaperLif;
pub use plif::Plif;

use crate::Neuron;
use crate::builder::Value;

/// Every zoo neuron with its defaults, in a fixed order (the paper's LIF first).
pub fn all() -> Vec<Box<dyn Neuron>> {
    vec![
        Box::new(PaperLif::default()),
        Box::new(Lif::default()),
        Box::new(If::default()),
        Box::new(Plif::default()),
        Box::new(Alif::default()),
        Box::new(Izhikevich::default()),
        Box::new(Eif::default()),
        Box::new(LeakyIntegrator::default()),
    ]
}

/// The zoo neuron with this IR name, with its defaults (for command lines and configs).
pub fn by_name(name: &str) -> Option<Box<dyn Neuron>> {
    Some(match name {
        PaperLif::NAME => Box::new(PaperLif::default()),
        Lif::NAME => Box::new(Lif::default()),
        If::NAME => Box::new(If::default()),
        Plif::NAME => Box::new(Plif::default()),
        Alif::NAME => Box::new(Alif::default()),
        Izhikevich::NAME => Box::new(Izhikevich::default()),
        Eif::NAME => Box::new(Eif::default()),
        LeakyIntegrator::NAME => Box::new(LeakyIntegrator::default()),
        _ => return None,
    })
}

/// The membrane after a spike: hard reset to `v_reset` where given, else soft reset
/// (subtract the threshold), as SpikingJelly's nodes do.
fn reset<'a>(
    h: Value<'a>,
    s: Value<'a>,
    v_threshold: Value<'a>,
    v_reset: Option<Value<'a>>,
) -> Value<'a> {
    match v_reset {
        Some(r) => h * (1.0 - s) + r * s,
        None => h - s * v_threshold,
    }
}
