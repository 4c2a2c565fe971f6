//! Checkpoints: one safetensors file with the model's tensors, the optimizer's state and
//! the training position.
//!
//! Model tensors are stored under their PyTorch `state_dict` names (weights and buffers as
//! `F32`, counters as `I64` like `num_batches_tracked`), so that in PyTorch
//!
//! ```python
//! sd = safetensors.torch.load_file(path)
//! model.load_state_dict({k: v for k, v in sd.items() if not k.startswith("optimizer.")})
//! ```
//!
//! restores the model. Optimizer state is stored as `optimizer.<param name>.<state name>`
//! (`F32`). The safetensors `__metadata__` holds the format version, epoch, optimizer kind,
//! step and hyper-parameters and the network's tensor order under keys starting with
//! `snn.`, plus the user's free-form [`Checkpoint::metadata`] under its own keys.
//!
//! A safetensors file without `snn.format` (e.g. `safetensors.torch.save_file(
//! model.state_dict(), path)`) loads as model tensors only, in file order.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::NnError;
use crate::optim::{Optimizer, OptimizerState};
use crate::params::{ParamSet, Role, Tensor};

/// The value of `snn.format` this version writes and reads.
pub const FORMAT: &str = "snn-checkpoint-1";

/// The prefix of optimizer-state tensor names.
const OPTIMIZER_PREFIX: &str = "optimizer.";
/// The prefix of the metadata keys this module owns.
const RESERVED: &str = "snn.";
/// How many names of each kind a mismatch report lists.
const LIST: usize = 5;

/// Everything needed to resume training or to run the trained model.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The model's tensors, in the network's order.
    pub params: ParamSet<f32>,
    pub optimizer: Option<(Optimizer, OptimizerState<f32>)>,
    /// Completed epochs.
    pub epoch: u64,
    /// Free-form text (a network description, the command line); keys must not start with
    /// `snn.`.
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// The start of a run: `params` (e.g. from [`init_params`](crate::init_params)), no
    /// optimizer state, no epoch completed, no metadata.
    pub fn fresh(params: ParamSet<f32>) -> Self {
        Self {
            params,
            optimizer: None,
            epoch: 0,
            metadata: BTreeMap::new(),
        }
    }
}

/// Writes `ckpt` to `path` atomically: into `<path>.tmp-<pid>`, synced to disk, then
/// renamed over `path`, so a crash leaves either the old file or the new one.
pub fn save(path: &Path, ckpt: &Checkpoint) -> Result<(), NnError> {
    let err = |problem: String| NnError::Checkpoint {
        path: path.display().to_string(),
        problem,
    };
    let mut meta: HashMap<String, String> = HashMap::new();
    for (k, v) in &ckpt.metadata {
        if k.starts_with(RESERVED) || k == "__metadata__" {
            return Err(err(format!(
                "metadata key `{k}` is reserved (keys starting with `{RESERVED}` belong to the checkpoint format): rename it"
            )));
        }
        meta.insert(k.clone(), v.clone());
    }
    meta.insert("snn.format".into(), FORMAT.into());
    meta.insert("snn.epoch".into(), ckpt.epoch.to_string());
    let mut order = Vec::with_capacity(ckpt.params.len());
    let mut named: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for t in &ckpt.params {
        if t.name.is_empty() || t.name.contains('\n') || t.name.starts_with(OPTIMIZER_PREFIX) {
            return Err(err(format!(
                "tensor name `{}` cannot be stored: names must be non-empty, on one line and not start with `{OPTIMIZER_PREFIX}` (the optimizer state's prefix)",
                t.name.escape_debug()
            )));
        }
        order.push(t.name.as_str());
        let (dtype, bytes) = if t.role == Role::Counter {
            (Dtype::I64, counter_bytes(t).map_err(err)?)
        } else {
            (Dtype::F32, f32_bytes(&t.data))
        };
        named.push((t.name.clone(), dtype, t.shape.clone(), bytes));
    }
    meta.insert("snn.order".into(), order.join("\n"));
    if let Some((opt, state)) = &ckpt.optimizer {
        opt.validate().map_err(|e| err(e.to_string()))?;
        let names = opt.state_names();
        if state.buffers.len() != names.len() {
            return Err(err(format!(
                "{} keeps {} state tensors per weight but the state has {}",
                opt.kind(),
                names.len(),
                state.buffers.len()
            )));
        }
        meta.insert("snn.optimizer".into(), opt.kind().into());
        meta.insert("snn.optimizer.step".into(), state.step.to_string());
        for (k, v) in hyper_parameters(opt) {
            meta.insert(format!("snn.optimizer.{k}"), v);
        }
        for (set, state_name) in state.buffers.iter().zip(names) {
            for t in set {
                match ckpt.params.get(&t.name) {
                    Some(w) if w.role == Role::Weight && w.shape == t.shape => {}
                    _ => {
                        return Err(err(format!(
                            "optimizer state `{state_name}` of `{}` has no weight of that name and shape {:?} in the model",
                            t.name, t.shape
                        )));
                    }
                }
                named.push((
                    format!("{OPTIMIZER_PREFIX}{}.{state_name}", t.name),
                    Dtype::F32,
                    t.shape.clone(),
                    f32_bytes(&t.data),
                ));
            }
        }
    }
    let mut views = Vec::with_capacity(named.len());
    for (name, dtype, shape, bytes) in &named {
        let view = TensorView::new(*dtype, shape.clone(), bytes)
            .map_err(|e| err(format!("tensor `{name}`: {e}")))?;
        views.push((name.as_str(), view));
    }
    let bytes =
        safetensors::serialize(views, Some(meta)).map_err(|e| err(format!("encoding: {e}")))?;
    let bytes = sorted_header(bytes).map_err(|e| err(format!("encoding: {e}")))?;
    write_atomically(path, &bytes).map_err(err)
}

/// `bytes`, a safetensors file, with its header's entries and metadata in sorted order.
/// safetensors writes `__metadata__` from a `HashMap`, whose order changes from map to
/// map, so that equal checkpoints would not be equal files. The same entries written again
/// take the same bytes (one JSON encoder), so every tensor keeps its offsets; what is left
/// of the header stays the spaces that pad it.
fn sorted_header(mut bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let (len, _) =
        SafeTensors::read_metadata(&bytes).map_err(|e| format!("reading the header back: {e}"))?;
    let end = len.checked_add(8).ok_or("a header too large")?;
    let header = bytes.get(8..end).ok_or("a header past the end")?;
    let mut entries: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| format!("reading the header back: {e}"))?;
    if let Some(meta) = entries.remove("__metadata__") {
        let meta: BTreeMap<String, String> =
            serde_json::from_value(meta).map_err(|e| format!("reading the metadata: {e}"))?;
        entries.insert(
            "__metadata__".into(),
            serde_json::to_value(meta).map_err(|e| e.to_string())?,
        );
    }
    let sorted = serde_json::to_vec(&entries).map_err(|e| e.to_string())?;
    if sorted.len() > len {
        return Err(format!(
            "the sorted header takes {} bytes where safetensors wrote {len}",
            sorted.len()
        ));
    }
    bytes[8..8 + sorted.len()].copy_from_slice(&sorted);
    bytes[8 + sorted.len()..end].fill(b' ');
    Ok(bytes)
}

/// Reads a checkpoint written by [`save`], or a plain safetensors state dict.
pub fn load(path: &Path) -> Result<Checkpoint, NnError> {
    let err = |problem: String| NnError::Checkpoint {
        path: path.display().to_string(),
        problem,
    };
    let bytes = std::fs::read(path).map_err(|e| {
        err(if e.kind() == std::io::ErrorKind::NotFound {
            "no such file: check the path (or train first to create it)".into()
        } else {
            format!("cannot read it: {e}")
        })
    })?;
    let corrupt = |e: safetensors::SafeTensorError| {
        err(format!(
            "not a valid safetensors file (corrupt or truncated: {e}); restore it from a copy or start afresh"
        ))
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(corrupt)?;
    let file = SafeTensors::deserialize(&bytes).map_err(corrupt)?;
    let mut meta: BTreeMap<String, String> = header
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let ours = match meta.get("snn.format") {
        None => false,
        Some(f) if f == FORMAT => true,
        Some(f) => {
            return Err(err(format!(
                "format `{f}` is not supported: this version reads `{FORMAT}`"
            )));
        }
    };
    // Tensors in file order (deterministic; the network's order is restored below).
    let mut tensors: Vec<(String, TensorView<'_>)> = file.tensors();
    tensors.sort_by_key(|(name, _)| header.info(name).map(|i| i.data_offsets));
    let mut model: Vec<Tensor<f32>> = Vec::new();
    let mut states: BTreeMap<String, TensorView<'_>> = BTreeMap::new();
    for (name, view) in tensors {
        if ours && name.starts_with(OPTIMIZER_PREFIX) {
            states.insert(name, view);
            continue;
        }
        let role = match view.dtype() {
            Dtype::I64 => Role::Counter,
            Dtype::F32 if name.ends_with("running_mean") || name.ends_with("running_var") => {
                Role::Buffer
            }
            Dtype::F32 => Role::Weight,
            other => {
                return Err(err(format!(
                    "tensor `{name}` is {other:?}; checkpoints hold F32 tensors and I64 counters: convert it to float32 before saving"
                )));
            }
        };
        model.push(Tensor {
            data: decode(&view, role == Role::Counter),
            shape: view.shape().to_vec(),
            name,
            role,
        });
    }
    if let Some(order) = meta.get("snn.order") {
        let rank: HashMap<&str, usize> = order
            .split('\n')
            .filter(|n| !n.is_empty())
            .zip(0..)
            .collect();
        if rank.len() != model.len() || model.iter().any(|t| !rank.contains_key(&t.name[..])) {
            return Err(err(format!(
                "its tensor list (snn.order, {} names) does not match its {} model tensors: the file is corrupt",
                rank.len(),
                model.len()
            )));
        }
        model.sort_by_key(|t| rank[&t.name[..]]);
    }
    let mut params = ParamSet::new();
    for t in model {
        params.push(t).map_err(|e| err(e.to_string()))?;
    }
    let number = |key: &str| -> Result<u64, NnError> {
        match meta.get(key) {
            None if key == "snn.epoch" && !ours => Ok(0),
            None => Err(err(format!(
                "its metadata lacks `{key}`: the file is corrupt"
            ))),
            Some(v) => v
                .parse()
                .map_err(|_| err(format!("metadata `{key}` = `{v}` is not a whole number"))),
        }
    };
    let epoch = number("snn.epoch")?;
    let optimizer = match meta.get("snn.optimizer").filter(|_| ours) {
        None => {
            if let Some(name) = states.keys().next() {
                return Err(err(format!(
                    "it holds optimizer state (`{name}`) but no optimizer settings (snn.optimizer): the file is corrupt"
                )));
            }
            None
        }
        Some(kind) => {
            let opt = parse_optimizer(kind, &meta).map_err(err)?;
            let step = number("snn.optimizer.step")?;
            let mut buffers = Vec::new();
            for state_name in opt.state_names() {
                let mut set = ParamSet::new();
                for w in params.weights() {
                    let key = format!("{OPTIMIZER_PREFIX}{}.{state_name}", w.name);
                    let view = states.remove(&key).ok_or_else(|| {
                        err(format!(
                            "optimizer state `{key}` is missing: the file is corrupt"
                        ))
                    })?;
                    if view.dtype() != Dtype::F32 || view.shape() != &w.shape[..] {
                        return Err(err(format!(
                            "optimizer state `{key}` is {:?} {:?}, its weight F32 {:?}: the file is corrupt",
                            view.dtype(),
                            view.shape(),
                            w.shape
                        )));
                    }
                    set.push(Tensor {
                        name: w.name.clone(),
                        shape: w.shape.clone(),
                        role: Role::Weight,
                        data: decode(&view, false),
                    })
                    .map_err(|e| err(e.to_string()))?;
                }
                buffers.push(set);
            }
            if let Some(name) = states.keys().next() {
                return Err(err(format!(
                    "optimizer state `{name}` belongs to no weight of the model: the file is corrupt"
                )));
            }
            Some((opt, OptimizerState { step, buffers }))
        }
    };
    meta.retain(|k, _| !k.starts_with(RESERVED));
    Ok(Checkpoint {
        params,
        optimizer,
        epoch,
        metadata: meta,
    })
}

/// Checks that `loaded` has exactly the tensors of `expected` (names and shapes); the error
/// lists the first few missing, unexpected and mis-shaped tensors.
pub fn check_compatible(expected: &ParamSet<f32>, loaded: &ParamSet<f32>) -> Result<(), NnError> {
    let shapes = |set: &ParamSet<f32>| -> Vec<(String, Vec<usize>)> {
        set.iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect()
    };
    check_shapes(
        ("the checkpoint", "checkpoint"),
        "load a checkpoint of the same architecture",
        &shapes(expected),
        &shapes(loaded),
    )
}

/// Checks `loaded` `(name, shape)`s against `expected` ones. The error names the loaded set
/// (`what`: as a subject, and as a shape's label), lists the first few missing, unexpected
/// and mis-shaped tensors, and ends with `hint`.
pub(crate) fn check_shapes(
    (what, label): (&str, &str),
    hint: &str,
    expected: &[(String, Vec<usize>)],
    loaded: &[(String, Vec<usize>)],
) -> Result<(), NnError> {
    let expected_by_name: BTreeMap<&str, &[usize]> =
        expected.iter().map(|(n, s)| (n.as_str(), &s[..])).collect();
    let loaded_by_name: BTreeMap<&str, &[usize]> =
        loaded.iter().map(|(n, s)| (n.as_str(), &s[..])).collect();
    let missing: Vec<String> = expected
        .iter()
        .filter(|(n, _)| !loaded_by_name.contains_key(n.as_str()))
        .map(|(n, _)| format!("`{n}`"))
        .collect();
    let unexpected: Vec<String> = loaded
        .iter()
        .filter(|(n, _)| !expected_by_name.contains_key(n.as_str()))
        .map(|(n, _)| format!("`{n}`"))
        .collect();
    let misshaped: Vec<String> = expected
        .iter()
        .filter_map(|(n, shape)| {
            let l = loaded_by_name.get(n.as_str())?;
            (*l != &shape[..]).then(|| format!("`{n}` (network {shape:?}, {label} {l:?})"))
        })
        .collect();
    if missing.is_empty() && unexpected.is_empty() && misshaped.is_empty() {
        return Ok(());
    }
    let mut parts = Vec::new();
    for (kind, list) in [
        ("missing", &missing),
        ("unexpected", &unexpected),
        ("with other shapes", &misshaped),
    ] {
        if list.is_empty() {
            continue;
        }
        let mut s = format!(
            "{} {kind}: {}",
            list.len(),
            list[..list.len().min(LIST)].join(", ")
        );
        if list.len() > LIST {
            s.push_str(&format!(" and {} more", list.len() - LIST));
        }
        parts.push(s);
    }
    Err(NnError::shape(format!(
        "{what} does not fit the network ({}): {hint}",
        parts.join("; ")
    )))
}

fn f32_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A counter's values as little-endian `i64`s (they must be whole numbers).
fn counter_bytes(t: &Tensor<f32>) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(t.data.len() * 8);
    for &x in &t.data {
        if !(x.is_finite() && x.fract() == 0.0) {
            return Err(format!(
                "counter `{}` holds {x}, which is not a whole number",
                t.name
            ));
        }
        out.extend((x as i64).to_le_bytes());
    }
    Ok(out)
}

/// The values of an F32 tensor, or of an I64 one converted to f32.
fn decode(view: &TensorView<'_>, int64: bool) -> Vec<f32> {
    if int64 {
        view.data()
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                i64::from_le_bytes(b) as f32
            })
            .collect()
    } else {
        view.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

/// The optimizer's hyper-parameters as metadata (Rust's float formatting round-trips).
fn hyper_parameters(opt: &Optimizer) -> Vec<(&'static str, String)> {
    match *opt {
        Optimizer::Sgd {
            lr,
            momentum,
            dampening,
            weight_decay,
            nesterov,
        } => vec![
            ("lr", lr.to_string()),
            ("momentum", momentum.to_string()),
            ("dampening", dampening.to_string()),
            ("weight_decay", weight_decay.to_string()),
            ("nesterov", nesterov.to_string()),
        ],
        Optimizer::Adam { .. } | Optimizer::AdamW { .. } => {
            let adam = opt.adam_family();
            vec![
                ("lr", opt.lr().to_string()),
                ("beta1", adam.beta1.to_string()),
                ("beta2", adam.beta2.to_string()),
                ("eps", adam.eps.to_string()),
                ("weight_decay", adam.weight_decay.to_string()),
            ]
        }
    }
}

fn parse_optimizer(kind: &str, meta: &BTreeMap<String, String>) -> Result<Optimizer, String> {
    let get = |k: &str| -> Result<&str, String> {
        meta.get(&format!("snn.optimizer.{k}"))
            .map(String::as_str)
            .ok_or_else(|| format!("its metadata lacks `snn.optimizer.{k}`: the file is corrupt"))
    };
    let f = |k: &str| -> Result<f64, String> {
        let v = get(k)?;
        v.parse()
            .map_err(|_| format!("metadata `snn.optimizer.{k}` = `{v}` is not a number"))
    };
    let opt = match kind {
        "sgd" => Optimizer::Sgd {
            lr: f("lr")?,
            momentum: f("momentum")?,
            dampening: f("dampening")?,
            weight_decay: f("weight_decay")?,
            nesterov: match get("nesterov")? {
                "true" => true,
                "false" => false,
                v => {
                    return Err(format!(
                        "metadata `snn.optimizer.nesterov` = `{v}` is not true or false"
                    ));
                }
            },
        },
        "adam" | "adamw" => {
            let (lr, beta1, beta2, eps, weight_decay) = (
                f("lr")?,
                f("beta1")?,
                f("beta2")?,
                f("eps")?,
                f("weight_decay")?,
            );
            if kind == "adam" {
                Optimizer::Adam {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                }
            } else {
                Optimizer::AdamW {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                }
            }
        }
        other => {
            return Err(format!(
                "optimizer `{other}` is unknown: this version knows sgd, adam and adamw"
            ));
        }
    };
    opt.validate().map_err(|e| e.to_string())?;
    Ok(opt)
}

/// Writes `bytes` to a sibling temporary file, syncs it, renames it over `path` and syncs
/// the directory (so the rename itself survives a crash). The temporary file is removed on
/// failure.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let file_name = path
        .file_name()
        .ok_or_else(|| "the path names no file".to_string())?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot write it: {e}"));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Syncing a directory is how POSIX makes a rename durable; where directories cannot be
    // opened as files (Windows), the rename is as durable as the platform makes it.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
