//! Compiling generated CUDA C with NVRTC, to PTX or to a cubin with its resource report.
#![allow(unsafe_code)]

use std::ffi::CString;

use cudarc::nvrtc::{result, sys};

use crate::error::RuntimeError;
use crate::libs;

/// What NVRTC produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// PTX text (for a virtual `compute_XY` target) or a cubin (for a real `sm_XY`).
    pub image: Vec<u8>,
    pub cubin: bool,
    /// NVRTC's log, with ptxas's resource report when asked for (`--ptxas-options=-v`).
    pub log: String,
}

/// Per-kernel resource use, from ptxas's verbose report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub kernel: String,
    pub registers: u32,
    pub stack_frame_bytes: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
}

/// NVRTC's version, `(major, minor)`.
pub fn version() -> Result<(i32, i32), RuntimeError> {
    libs::nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: plain out-parameters.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }.result()?;
    Ok((major, minor))
}

/// Compiles `source` for `arch` (`"sm_90"`: a cubin; `"compute_90"`: PTX).
pub fn compile(
    source: &str,
    name: &str,
    arch: &str,
    options: &[&str],
) -> Result<Output, RuntimeError> {
    libs::nvrtc()?;
    let nul = |what: &str| {
        RuntimeError::invalid(
            format!("compiling `{name}`"),
            format!("the {what} contains a NUL byte"),
        )
    };
    let src = CString::new(source).map_err(|_| nul("source"))?;
    let cname = CString::new(format!("{name}.cu")).map_err(|_| nul("name"))?;
    let prog = result::create_program(&src, Some(&cname))?;
    let mut opts: Vec<String> = vec![format!("--gpu-architecture={arch}")];
    opts.extend(options.iter().map(|o| o.to_string()));
    // SAFETY: `prog` was just created and is destroyed below, once.
    let compiled = unsafe { result::compile_program(prog, &opts) };
    // SAFETY: as above.
    let log = unsafe { result::get_program_log(prog) }
        .map(|l| c_text(&l))
        .unwrap_or_default();
    let out = match compiled {
        Err(_) => Err(RuntimeError::Compile {
            name: name.into(),
            arch: arch.into(),
            log: with_source_lines(&log, source),
        }),
        Ok(()) => {
            let cubin = arch.starts_with("sm_");
            // SAFETY: as above; the buffers are sized from NVRTC's own report.
            let image = unsafe {
                if cubin {
                    let mut size = 0usize;
                    sys::nvrtcGetCUBINSize(prog, &mut size)
                        .result()
                        .and_then(|()| {
                            let mut buf = vec![0u8; size];
                            sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr().cast())
                                .result()
                                .map(|()| buf)
                        })
                } else {
                    result::get_ptx(prog).map(|p| p.into_iter().map(|c| c as u8).collect())
                }
            };
            image
                .map(|image| Output { image, cubin, log })
                .map_err(RuntimeError::from)
        }
    };
    // SAFETY: created above and not destroyed yet.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

fn c_text(v: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = v
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Appends the source lines that NVRTC's errors point at (`name.cu(LINE): error ..`).
fn with_source_lines(log: &str, source: &str) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let mut out = log.trim_end().to_string();
    let mut shown = std::collections::BTreeSet::new();
    for l in log.lines() {
        let Some(open) = l.find(".cu(") else { continue };
        let rest = &l[open + 4..];
        let Some(close) = rest.find(')') else {
            continue;
        };
        if let Ok(n) = rest[..close].parse::<usize>()
            && shown.insert(n)
            && n >= 1
            && n <= lines.len()
        {
            out.push_str(&format!("\n  line {n}: {}", lines[n - 1].trim()));
        }
    }
    out
}

/// Parses ptxas's verbose report (`--ptxas-options=-v`) into per-kernel resources.
pub fn resources(log: &str) -> Vec<Resources> {
    let mut out: Vec<Resources> = Vec::new();
    let num = |s: &str, before: &str| -> u32 {
        s.find(before)
            .and_then(|i| s[..i].split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    for line in log.lines() {
        if let Some(i) = line.find("Compiling entry function '") {
            let rest = &line[i + 26..];
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            out.push(Resources {
                kernel: name,
                ..Resources::default()
            });
        } else if let Some(r) = out.last_mut() {
            if line.contains("bytes stack frame") {
                r.stack_frame_bytes = num(line, "bytes stack frame");
                r.spill_store_bytes = num(line, "bytes spill stores");
                r.spill_load_bytes = num(line, "bytes spill loads");
            } else if line.contains("Used") && line.contains("registers") {
                r.registers = num(line, "registers");
            }
        }
    }
    out
}
