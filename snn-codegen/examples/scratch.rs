use snn_codegen::*;
fn main() {
    let st = Storage { io: Dtype::F32, spikes: Dtype::U8, saves: Dtype::BF16 };
    for n in zoo::all() {
        let c = compile(n.as_ref(), st).unwrap();
        println!("{}: {}", c.neuron.name, c.plan);
    }
}
