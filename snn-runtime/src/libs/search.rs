//! Where the CUDA libraries may be: their file names and the directories to look in.
//! Plain `std`, so that the build script shares it: it asks whether NVRTC is here, to
//! decide whether the tests that need NVRTC run.

use std::path::PathBuf;

/// A CUDA library: its file names (newest first), the pip packages that ship it, and how
/// to install it.
pub struct Spec {
    pub what: &'static str,
    pub files: &'static [&'static str],
    pub pip: &'static [&'static str],
    pub install: &'static str,
}

pub const NVRTC: Spec = Spec {
    what: "the CUDA runtime compiler NVRTC (libnvrtc)",
    files: &["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"],
    pip: &["nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib"],
    install: "Install the CUDA toolkit, or `pip install nvidia-cuda-nvrtc==13.0.*`, and set CUDA_HOME or LD_LIBRARY_PATH to its lib directory.",
};

pub const DRIVER: Spec = Spec {
    what: "the CUDA driver (libcuda)",
    files: &["libcuda.so.1", "libcuda.so"],
    pip: &[],
    install: "Install the NVIDIA driver (CUDA 13 or newer), or set CUDA_HOME or LD_LIBRARY_PATH to the directory that holds libcuda.so.1.",
};

pub const CUDNN: Spec = Spec {
    what: "cuDNN 9 (libcudnn.so.9, for convolutions)",
    files: &["libcudnn.so.9"],
    pip: &["nvidia/cudnn/lib", "nvidia/cu13/lib"],
    install: "Install cuDNN 9 for CUDA 13 (the `cudnn9-cuda-13` package, or `pip install nvidia-cudnn-cu13`), and set CUDA_HOME or LD_LIBRARY_PATH to its lib directory.",
};

pub const CUBLAS: Spec = Spec {
    what: "cuBLAS 13 (libcublas.so.13, for linear layers)",
    files: &["libcublas.so.13"],
    pip: &["nvidia/cu13/lib", "nvidia/cublas/lib"],
    install: "Install the CUDA 13 toolkit's cuBLAS (`libcublas-13-0`, or `pip install nvidia-cublas`), and set CUDA_HOME or LD_LIBRARY_PATH to its lib directory.",
};

pub const NCCL: Spec = Spec {
    what: "NCCL 2 (libnccl.so.2, for training on several GPUs)",
    files: &["libnccl.so.2", "libnccl.so"],
    pip: &["nvidia/nccl/lib", "nvidia/cu13/lib"],
    install: "Install NCCL 2 for CUDA 13 (the `libnccl2` package, or `pip install nvidia-nccl-cu13`), and set CUDA_HOME or LD_LIBRARY_PATH to its lib directory.",
};

/// Directories to search, in order.
pub fn search_dirs(spec: &Spec) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Some(v) = std::env::var_os(var) {
            let base = PathBuf::from(v);
            dirs.push(base.join("lib64"));
            dirs.push(base.join("lib"));
        }
    }
    dirs.push("/usr/local/cuda/lib64".into());
    dirs.push("/usr/local/nvidia/lib64".into());
    dirs.push("/usr/lib/x86_64-linux-gnu".into());
    dirs.push("/usr/lib64".into());
    // pip: every site-packages on the Python path, and the ones beside this executable.
    let mut roots: Vec<PathBuf> = std::env::var_os("PYTHONPATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(home).join(".local/lib"));
    }
    roots.push("/usr/local/lib".into());
    roots.push("/usr/lib".into());
    for root in roots {
        let mut candidates = vec![root.clone()];
        if let Ok(entries) = std::fs::read_dir(&root) {
            let mut pythons: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("python"))
                })
                .collect();
            // Directory order is the file system's: sort so that the search is repeatable.
            pythons.sort();
            for p in pythons {
                candidates.push(p.join("site-packages"));
                candidates.push(p.join("dist-packages"));
            }
        }
        for c in candidates {
            for sub in spec.pip {
                dirs.push(c.join(sub));
            }
        }
    }
    dirs
}
