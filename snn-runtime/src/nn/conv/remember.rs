//! cuDNN's algorithm choices kept on disk beside the kernel cache, so that a later run of
//! the same network on the same card skips the searches (about a second for a ResNet's
//! few dozen problems, which made a first epoch slower than the next).
//!
//! One text file per device, cuDNN version and snn-runtime version
//! (`conv-<hash>.txt` in the kernel cache's folder): a line per problem, its key, a tab,
//! then the choices best first. A line that does not parse is ignored (and searched
//! again); the file is rewritten atomically when a search adds a problem.

use std::collections::HashMap;
use std::fmt::Write;
use std::path::PathBuf;

use cudarc::cudnn::sys;
use xxhash_rust::xxh3::xxh3_64;

use super::cudnn::ProblemKey;
use super::search::{Algo, Candidate, DATA_ALGOS, FILTER_ALGOS, FORWARD_ALGOS};
use crate::cache::write_atomic;
use crate::device::Device;

pub(super) const MATHS: [sys::cudnnMathType_t; 4] = {
    use sys::cudnnMathType_t::*;
    [
        CUDNN_DEFAULT_MATH,
        CUDNN_TENSOR_OP_MATH,
        CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION,
        CUDNN_FMA_MATH,
    ]
};

/// The remembered choices of one device.
#[derive(Debug, Default)]
pub(super) struct Remembered {
    /// `None`: the kernel cache is in memory only, and so are these.
    path: Option<PathBuf>,
    lines: HashMap<String, String>,
}

impl Remembered {
    /// The choices for `device` with cuDNN `version`, read from disk when there are any.
    pub fn open(device: &Device, version: usize) -> Self {
        let Some(dir) = device.cache.dir() else {
            return Self::default();
        };
        let id = format!(
            "snn-runtime {} cudnn {version} {} sm_{}{} {}",
            env!("CARGO_PKG_VERSION"),
            device.info.name,
            device.info.compute_capability.0,
            device.info.compute_capability.1,
            device.info.total_memory
        );
        let path = dir.join(format!("conv-{:016x}.txt", xxh3_64(id.as_bytes())));
        let lines = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self {
            path: Some(path),
            lines,
        }
    }

    /// The choices remembered for `key` under a search limit of `limit` bytes.
    pub fn get(&self, key: &ProblemKey, limit: usize) -> Option<Vec<Candidate>> {
        let text = self.lines.get(&line_key(key, limit))?;
        let chosen = text
            .split(';')
            .map(|c| decode(key, c))
            .collect::<Option<Vec<_>>>()?;
        (!chosen.is_empty()).then_some(chosen)
    }

    /// Remembers `chosen` for `key`, on disk too. A cache that cannot be written only
    /// costs the next run its searches, so a failure to write is not an error.
    pub fn insert(&mut self, key: &ProblemKey, limit: usize, chosen: &[Candidate]) {
        let text: Vec<String> = chosen.iter().map(encode).collect();
        self.lines.insert(line_key(key, limit), text.join(";"));
        let Some(path) = &self.path else { return };
        let mut file = String::new();
        let mut keys: Vec<&String> = self.lines.keys().collect();
        keys.sort();
        for k in keys {
            let _ = writeln!(file, "{k}\t{}", self.lines[k]);
        }
        let _ = write_atomic(path, file.as_bytes());
    }
}

fn line_key(key: &ProblemKey, limit: usize) -> String {
    format!("{key:?} limit {limit}")
}

/// `algorithm index,math index,workspace bytes,millis,deterministic`.
fn encode(c: &Candidate) -> String {
    let algo = match c.algo {
        Algo::Forward(a) => FORWARD_ALGOS.iter().position(|&x| x == a),
        Algo::Data(a) => DATA_ALGOS.iter().position(|&x| x == a),
        Algo::Filter(a) => FILTER_ALGOS.iter().position(|&x| x == a),
    };
    let math = MATHS.iter().position(|&m| m == c.math);
    format!(
        "{},{},{},{},{}",
        algo.map_or(-1, |i| i as i64),
        math.map_or(-1, |i| i as i64),
        c.workspace,
        c.millis,
        u8::from(c.deterministic)
    )
}

fn decode(key: &ProblemKey, text: &str) -> Option<Candidate> {
    let mut f = text.split(',');
    let algo: usize = f.next()?.parse().ok()?;
    let math: usize = f.next()?.parse().ok()?;
    let workspace = f.next()?.parse().ok()?;
    let millis = f.next()?.parse().ok()?;
    let deterministic = f.next()? == "1";
    let algo = match key.pass {
        super::ConvPass::Forward => Algo::Forward(*FORWARD_ALGOS.get(algo)?),
        super::ConvPass::BackwardData => Algo::Data(*DATA_ALGOS.get(algo)?),
        super::ConvPass::BackwardFilter => Algo::Filter(*FILTER_ALGOS.get(algo)?),
    };
    Some(Candidate {
        algo,
        math: *MATHS.get(math)?,
        workspace,
        millis,
        deterministic,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use snn_nn::{Conv2d, ImageShape};

    use super::*;
    use crate::nn::conv::{ConvMath, ConvPass};

    #[test]
    fn choices_survive_the_text_form_and_damage_is_ignored() {
        let key = ProblemKey {
            conv: Conv2d::new(3, 8, 3, 1, 1),
            input: ImageShape::new(3, 32, 32),
            images: 3200,
            math: ConvMath::Tf32,
            pass: ConvPass::BackwardFilter,
            deterministic: false,
        };
        let chosen = vec![
            Candidate {
                algo: Algo::Filter(FILTER_ALGOS[3]),
                math: MATHS[1],
                workspace: 1 << 20,
                millis: 0.125,
                deterministic: true,
            },
            Candidate {
                algo: Algo::Filter(FILTER_ALGOS[0]),
                math: MATHS[0],
                workspace: 0,
                millis: 1.5,
                deterministic: false,
            },
        ];
        let mut r = Remembered::default();
        r.insert(&key, 256 << 20, &chosen);
        assert_eq!(r.get(&key, 256 << 20).unwrap(), chosen);
        assert!(
            r.get(&key, 128 << 20).is_none(),
            "another limit is another problem"
        );
        let other = ProblemKey {
            pass: ConvPass::Forward,
            ..key
        };
        assert!(r.get(&other, 256 << 20).is_none());
        r.lines.insert(line_key(&key, 1), "3,1,x,0.1,1".into());
        assert!(r.get(&key, 1).is_none(), "a damaged line is searched again");
        r.lines.insert(line_key(&key, 2), "99,1,0,0.1,1".into());
        assert!(
            r.get(&key, 2).is_none(),
            "an unknown algorithm is searched again"
        );
    }
}
