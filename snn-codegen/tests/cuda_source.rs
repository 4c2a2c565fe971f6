//! Snapshots of the generated CUDA sources: every zoo neuron and kernel kind, in f32 and
//! in narrow storage (bf16 inputs and saves, u8 spikes) with the deterministic reduction.
//! The shared prelude is checked once and cut from the snapshots.
#![allow(clippy::unwrap_used)]

use snn_codegen::cuda::{
    ArgType, KernelOptions, KernelSignature, PRELUDE, Reduction, generate, parse_kernels,
};
use snn_codegen::{Storage, compile, zoo};

/// The default options with the deterministic reduction.
fn deterministic() -> KernelOptions {
    KernelOptions {
        reduction: Reduction::Deterministic,
        ..Default::default()
    }
}

fn without_prelude(source: &str) -> String {
    let prelude = PRELUDE.trim_end();
    assert_eq!(
        source.matches(prelude).count(),
        1,
        "every source holds the prelude once"
    );
    source.replacen(prelude, "// (prelude)", 1)
}

#[test]
fn generated_sources() {
    for n in zoo::all() {
        for (label, storage, opts) in [
            ("f32", Storage::F32, KernelOptions::default()),
            ("narrow", Storage::NARROW, deterministic()),
        ] {
            let c = compile(n.as_ref(), storage).unwrap();
            for k in generate(&c, &opts).all() {
                let name = format!("{}_{}_{label}", c.neuron.name, k.kind);
                insta::assert_snapshot!(name, without_prelude(&k.source));
            }
        }
    }
}

#[test]
fn generation_is_deterministic() {
    for n in zoo::all() {
        let c = compile(n.as_ref(), Storage::F32).unwrap();
        let opts = KernelOptions::default();
        assert_eq!(
            generate(&c, &opts),
            generate(&compile(n.as_ref(), Storage::F32).unwrap(), &opts)
        );
    }
}

#[test]
fn unrolled_kernels_take_no_steps_argument() {
    let c = compile(&zoo::PaperLif::default(), Storage::F32).unwrap();
    let set = generate(
        &c,
        &KernelOptions {
            fixed_steps: Some(32),
            ..Default::default()
        },
    );
    for k in set.all() {
        let sig = &k.signatures[0];
        assert!(sig.name.ends_with("_t32"), "{}", sig.name);
        assert!(!sig.args.iter().any(|a| a.name == "steps"));
        assert!(
            k.source.contains("const long long steps = 32;")
                && k.source.contains("#pragma unroll\n")
        );
    }
}

/// The emitter's signatures are the sources' own declarations: parsing a generated source
/// gives the same kernels, argument names and types (roles aside), so the runtime could
/// launch a generated kernel from its text alone, as it launches hand-written ones.
#[test]
fn signatures_match_the_declarations_in_the_source() {
    for n in zoo::all() {
        // f32 storage: parsing refuses 16-bit types, which could be f16 or bf16.
        for opts in [KernelOptions::default(), deterministic()] {
            let c = compile(n.as_ref(), Storage::F32).unwrap();
            for k in generate(&c, &opts).all() {
                let parsed = parse_kernels(&k.source).unwrap();
                let typed = |sigs: &[KernelSignature]| -> Vec<(String, Vec<(String, ArgType)>)> {
                    sigs.iter()
                        .map(|s| {
                            let args = s.args.iter().map(|a| (a.name.clone(), a.ty)).collect();
                            (s.name.clone(), args)
                        })
                        .collect()
                };
                assert_eq!(typed(&parsed), typed(&k.signatures), "{}", k.kind);
            }
        }
    }
}
