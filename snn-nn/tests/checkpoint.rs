//! Checkpoints: bit-exact round trips, atomic writes, damaged files, mismatch reports, and
//! files written byte by byte from the safetensors specification.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use snn_nn::checkpoint::{self, Checkpoint, check_compatible};
use snn_nn::optim::{Optimizer, OptimizerState};
use snn_nn::{NnError, ParamSet, Role, Tensor};

fn tensor(name: &str, shape: &[usize], role: Role, data: Vec<f32>) -> Tensor<f32> {
    Tensor {
        name: name.into(),
        shape: shape.to_vec(),
        role,
        data,
    }
}

/// A conv + batch-norm + linear model, in network order (which is not alphabetical), with
/// awkward values: negative zero, a subnormal, a NaN payload, infinities.
fn model() -> ParamSet<f32> {
    let odd = vec![
        -0.0,
        f32::from_bits(1),
        f32::from_bits(0x7fc0_1234),
        f32::INFINITY,
        f32::NEG_INFINITY,
        1.0 / 3.0,
    ];
    let mut p = ParamSet::new();
    for t in [
        tensor("conv1.weight", &[2, 1, 1, 3], Role::Weight, odd),
        tensor("bn1.weight", &[2], Role::Weight, vec![1.0, 0.5]),
        tensor("bn1.bias", &[2], Role::Weight, vec![0.0, -0.25]),
        tensor("bn1.running_mean", &[2], Role::Buffer, vec![0.1, 0.2]),
        tensor("bn1.running_var", &[2], Role::Buffer, vec![0.9, 1.1]),
        tensor("bn1.num_batches_tracked", &[], Role::Counter, vec![1234.0]),
        tensor(
            "fc.weight",
            &[3, 2],
            Role::Weight,
            (0..6).map(|i| i as f32 * 0.1).collect(),
        ),
        tensor("fc.bias", &[3], Role::Weight, vec![7.0, 8.0, 9.0]),
    ] {
        p.push(t).unwrap();
    }
    p
}

fn adam_checkpoint() -> Checkpoint {
    let params = model();
    let opt = Optimizer::AdamW {
        lr: 3e-4,
        beta1: 0.85,
        beta2: 0.995,
        eps: 1e-7,
        weight_decay: 0.05,
    };
    let mut state = OptimizerState::new(&opt, &params);
    state.step = 4321;
    for (i, set) in state.buffers.iter_mut().enumerate() {
        for t in set.iter_mut() {
            for (j, x) in t.data.iter_mut().enumerate() {
                *x = (i * 100 + j) as f32 / 7.0;
            }
        }
    }
    Checkpoint {
        params,
        optimizer: Some((opt, state)),
        epoch: 17,
        metadata: BTreeMap::from([
            ("network".into(), "conv-bn-linear, 3 classes".into()),
            ("command".into(), "snn train --epochs 20".into()),
        ]),
    }
}

/// Bit-level equality (NaN payloads and signed zeros included).
fn assert_same_bits(a: &ParamSet<f32>, b: &ParamSet<f32>) {
    let names = |p: &ParamSet<f32>| p.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(a), names(b), "tensor order");
    for (x, y) in a.iter().zip(b) {
        assert_eq!((&x.shape, x.role), (&y.shape, y.role), "{}", x.name);
        let bits = |t: &Tensor<f32>| t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(x), bits(y), "{}", x.name);
    }
}

fn assert_same(a: &Checkpoint, b: &Checkpoint) {
    assert_same_bits(&a.params, &b.params);
    assert_eq!((a.epoch, &a.metadata), (b.epoch, &b.metadata));
    match (&a.optimizer, &b.optimizer) {
        (None, None) => {}
        (Some((oa, sa)), Some((ob, sb))) => {
            assert_eq!((oa, sa.step), (ob, sb.step));
            assert_eq!(sa.buffers.len(), sb.buffers.len());
            for (x, y) in sa.buffers.iter().zip(&sb.buffers) {
                assert_same_bits(x, y);
            }
        }
        _ => panic!("optimizer present in only one checkpoint"),
    }
}

fn problem(r: Result<Checkpoint, NnError>) -> String {
    match r {
        Err(NnError::Checkpoint { problem, .. }) => problem,
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

#[test]
fn round_trips_are_bit_exact_and_leave_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let ckpt = adam_checkpoint();
    checkpoint::save(&path, &ckpt).unwrap();
    assert_same(&checkpoint::load(&path).unwrap(), &ckpt);
    // Overwriting works, and only the checkpoint is left in the directory.
    let sgd = Optimizer::Sgd {
        lr: 0.1,
        momentum: 0.9,
        dampening: 0.1,
        weight_decay: 1e-4,
        nesterov: false,
    };
    let mut state = OptimizerState::new(&sgd, &ckpt.params);
    state.step = 3;
    let second = Checkpoint {
        optimizer: Some((sgd, state)),
        epoch: 18,
        ..ckpt
    };
    checkpoint::save(&path, &second).unwrap();
    assert_same(&checkpoint::load(&path).unwrap(), &second);
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["model.safetensors"]);
    // Without an optimizer, and with SGD that keeps no state.
    for optimizer in [
        None,
        Some((
            Optimizer::sgd(0.1, 0.0),
            OptimizerState::new(&Optimizer::sgd(0.1, 0.0), &model()),
        )),
    ] {
        let c = Checkpoint {
            params: model(),
            optimizer,
            epoch: 0,
            metadata: BTreeMap::new(),
        };
        checkpoint::save(&path, &c).unwrap();
        assert_same(&checkpoint::load(&path).unwrap(), &c);
    }
}

/// Equal checkpoints are equal files, whatever order the metadata took on its way.
#[test]
fn equal_checkpoints_are_equal_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut ckpt = adam_checkpoint();
    for k in 0..12 {
        ckpt.metadata
            .insert(format!("note{k}"), format!("\"value\" {k}\n"));
    }
    let files: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            let path = dir.path().join(format!("{i}.safetensors"));
            checkpoint::save(&path, &ckpt).unwrap();
            assert_same(&checkpoint::load(&path).unwrap(), &ckpt);
            std::fs::read(&path).unwrap()
        })
        .collect();
    for f in &files[1..] {
        assert!(f == &files[0], "two saves of one checkpoint differ");
    }
}

#[test]
fn the_file_is_a_pytorch_state_dict_plus_prefixed_optimizer_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    checkpoint::save(&path, &adam_checkpoint()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let counter = file.tensor("bn1.num_batches_tracked").unwrap();
    assert_eq!(counter.dtype(), safetensors::Dtype::I64);
    assert!(counter.shape().is_empty());
    assert_eq!(counter.data(), 1234i64.to_le_bytes());
    let w = file.tensor("fc.bias").unwrap();
    assert_eq!(
        (w.dtype(), w.shape()),
        (safetensors::Dtype::F32, &[3usize][..])
    );
    assert_eq!(w.data(), [7f32, 8.0, 9.0].map(f32::to_le_bytes).concat());
    let m = file.tensor("optimizer.fc.bias.exp_avg_sq").unwrap();
    assert_eq!(m.shape(), [3]);
    assert_eq!(file.len(), 8 + 2 * 5); // 8 model tensors, 2 moments of each of 5 weights
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().as_ref().unwrap();
    for (k, v) in [
        ("snn.format", "snn-checkpoint-1"),
        ("snn.epoch", "17"),
        ("snn.optimizer", "adamw"),
        ("snn.optimizer.step", "4321"),
        ("snn.optimizer.lr", "0.0003"),
        ("snn.optimizer.beta2", "0.995"),
        ("network", "conv-bn-linear, 3 classes"),
    ] {
        assert_eq!(meta.get(k).map(String::as_str), Some(v), "{k}");
    }
}

#[test]
fn damaged_and_foreign_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    assert!(problem(checkpoint::load(&path)).contains("no such file"));
    checkpoint::save(&path, &adam_checkpoint()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for (what, damaged) in [
        ("truncated data", bytes[..bytes.len() - 3].to_vec()),
        ("truncated header", bytes[..20].to_vec()),
        ("too short", bytes[..5].to_vec()),
        (
            "garbage",
            b"this is not a checkpoint at all, just text".to_vec(),
        ),
    ] {
        std::fs::write(&path, damaged).unwrap();
        let p = problem(checkpoint::load(&path));
        assert!(p.contains("corrupt"), "{what}: {p}");
    }
    let write = |meta: &[(&str, &str)], dtype, data: &[u8]| {
        let view = safetensors::tensor::TensorView::new(dtype, vec![data.len() / 2], data).unwrap();
        let meta: HashMap<String, String> = meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        std::fs::write(
            &path,
            safetensors::serialize([("w", view)], Some(meta)).unwrap(),
        )
        .unwrap();
    };
    write(
        &[("snn.format", "snn-checkpoint-9"), ("snn.epoch", "1")],
        safetensors::Dtype::F16,
        &[0; 4],
    );
    assert!(
        problem(checkpoint::load(&path)).contains("format `snn-checkpoint-9` is not supported")
    );
    write(&[], safetensors::Dtype::F16, &[0; 4]);
    assert!(problem(checkpoint::load(&path)).contains("tensor `w` is F16"));
    write(
        &[("snn.format", "snn-checkpoint-1"), ("snn.epoch", "x")],
        safetensors::Dtype::BF16,
        &[0; 4],
    );
    assert!(problem(checkpoint::load(&path)).contains("tensor `w` is BF16"));
}

#[test]
fn saving_rejects_what_would_not_load_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    let problem_of = |c: &Checkpoint| match checkpoint::save(&path, c) {
        Err(NnError::Checkpoint { problem, .. }) => problem,
        other => panic!("expected a checkpoint error, got {other:?}"),
    };
    let mut c = adam_checkpoint();
    c.metadata.insert("snn.epoch".into(), "3".into());
    assert!(problem_of(&c).contains("`snn.epoch` is reserved"));
    let mut c = adam_checkpoint();
    c.params.get_mut("bn1.num_batches_tracked").unwrap().data[0] = 1.5;
    assert!(problem_of(&c).contains("not a whole number"));
    let mut c = adam_checkpoint();
    c.params
        .push(tensor("optimizer.x", &[1], Role::Weight, vec![0.0]))
        .unwrap();
    assert!(problem_of(&c).contains("`optimizer.x` cannot be stored"));
    assert!(!path.exists());
    // Nothing is written where the directory does not exist, and no temporary file stays.
    let missing = dir.path().join("no/such/dir/c.safetensors");
    assert!(checkpoint::save(&missing, &adam_checkpoint()).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn mismatches_name_the_tensors() {
    let expected = model();
    let mut loaded = ParamSet::new();
    for t in expected.iter() {
        match t.name.as_str() {
            "bn1.running_var" => {}
            "fc.weight" => loaded
                .push(tensor("fc.weight", &[2, 3], t.role, t.data.clone()))
                .unwrap(),
            _ => loaded.push(t.clone()).unwrap(),
        }
    }
    loaded
        .push(tensor("fc2.weight", &[1], Role::Weight, vec![0.0]))
        .unwrap();
    check_compatible(&expected, &expected).unwrap();
    let msg = check_compatible(&expected, &loaded)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("1 missing: `bn1.running_var`"), "{msg}");
    assert!(msg.contains("1 unexpected: `fc2.weight`"), "{msg}");
    assert!(
        msg.contains("`fc.weight` (network [3, 2], checkpoint [2, 3])"),
        "{msg}"
    );
    // Long lists are cut after the first five.
    let msg = check_compatible(&expected, &ParamSet::new())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("8 missing: `conv1.weight`, `bn1.weight`") && msg.contains("and 3 more"),
        "{msg}"
    );
}

/// A safetensors file from its specification: an 8-byte little-endian header length, a
/// JSON header, then the tensors' bytes at their offsets.
fn hand_written(path: &Path, header: &str, data: &[u8]) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn hand_written_files_are_read_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hand.safetensors");
    let mut data = Vec::new();
    data.extend([1.5f32, -2.0, 0.25, 4.0].map(f32::to_le_bytes).concat()); // 0..16
    data.extend(7i64.to_le_bytes()); // 16..24
    data.extend([0.5f32, 0.75].map(f32::to_le_bytes).concat()); // 24..32
    // A plain state dict, as `safetensors.torch.save_file(model.state_dict())` writes one.
    let header = r#"{"fc.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"bn.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[16,24]},"bn.running_mean":{"dtype":"F32","shape":[2],"data_offsets":[24,32]}}"#;
    hand_written(&path, header, &data);
    let c = checkpoint::load(&path).unwrap();
    let want = [
        tensor(
            "fc.weight",
            &[2, 2],
            Role::Weight,
            vec![1.5, -2.0, 0.25, 4.0],
        ),
        tensor("bn.num_batches_tracked", &[], Role::Counter, vec![7.0]),
        tensor("bn.running_mean", &[2], Role::Buffer, vec![0.5, 0.75]),
    ];
    assert_eq!(c.params.iter().cloned().collect::<Vec<_>>(), want);
    assert_eq!(
        (c.epoch, c.optimizer.is_none(), c.metadata.len()),
        (0, true, 0)
    );

    // With this format's metadata: SGD momentum state for the one weight, a given order.
    data.extend([0.1f32, 0.2, 0.3, 0.4].map(f32::to_le_bytes).concat()); // 32..48
    let header = r#"{"__metadata__":{"snn.format":"snn-checkpoint-1","snn.epoch":"5","snn.order":"bn.running_mean\nfc.weight\nbn.num_batches_tracked","snn.optimizer":"sgd","snn.optimizer.step":"9","snn.optimizer.lr":"0.5","snn.optimizer.momentum":"0.9","snn.optimizer.dampening":"0","snn.optimizer.weight_decay":"0","snn.optimizer.nesterov":"true","note":"by hand"},"fc.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"bn.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[16,24]},"bn.running_mean":{"dtype":"F32","shape":[2],"data_offsets":[24,32]},"optimizer.fc.weight.momentum_buffer":{"dtype":"F32","shape":[2,2],"data_offsets":[32,48]}}"#;
    hand_written(&path, header, &data);
    let c = checkpoint::load(&path).unwrap();
    let names: Vec<&str> = c.params.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["bn.running_mean", "fc.weight", "bn.num_batches_tracked"]
    );
    assert_eq!(c.epoch, 5);
    assert_eq!(
        c.metadata,
        BTreeMap::from([("note".to_string(), "by hand".to_string())])
    );
    let (opt, state) = c.optimizer.unwrap();
    assert_eq!(
        opt,
        Optimizer::Sgd {
            lr: 0.5,
            momentum: 0.9,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: true
        }
    );
    assert_eq!(state.step, 9);
    assert_eq!(
        state.buffers[0].data("fc.weight").unwrap(),
        &[0.1, 0.2, 0.3, 0.4]
    );

    // Optimizer state that belongs to no weight is corruption.
    let header = header.replace(
        "optimizer.fc.weight.momentum_buffer",
        "optimizer.fc.bias.momentum_buffer",
    );
    hand_written(&path, &header, &data);
    assert!(
        problem(checkpoint::load(&path))
            .contains("`optimizer.fc.weight.momentum_buffer` is missing")
    );
}
