//! Who is who in a run of several processes, from the launcher's environment: torchrun's
//! (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`) or Slurm's
//! (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, the first host of
//! `SLURM_JOB_NODELIST`), or a lone process when neither is set.

use std::fmt;

use super::DistError;

/// The port rank 0 listens on when Slurm starts the run and `MASTER_PORT` is not set
/// (torchrun's default).
pub const DEFAULT_PORT: u16 = 29500;

/// Which launcher started the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launcher {
    /// No launcher: one process, rank 0 of 1.
    None,
    Torchrun,
    Slurm,
}

impl fmt::Display for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Launcher::None => "no launcher",
            Launcher::Torchrun => "torchrun",
            Launcher::Slurm => "Slurm",
        })
    }
}

/// One process's place among the processes of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct World {
    /// This process's rank, `0..size`; rank 0 writes checkpoints and metrics.
    pub rank: usize,
    /// The number of processes (one per GPU).
    pub size: usize,
    /// The process's index on its machine: the GPU it runs on.
    pub local_rank: usize,
    /// Where rank 0 listens for the rendezvous.
    pub master_addr: String,
    pub master_port: u16,
    pub launcher: Launcher,
}

impl World {
    /// A lone process: rank 0 of 1, on GPU 0.
    pub fn single() -> Self {
        Self::local(0, 1, DEFAULT_PORT)
    }

    /// Rank `rank` of `size` processes on this machine, meeting at `127.0.0.1:port` (one
    /// process per GPU started by a launcher of our own, or threads in tests).
    pub fn local(rank: usize, size: usize, port: u16) -> Self {
        Self {
            rank,
            size,
            local_rank: rank,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            launcher: Launcher::None,
        }
    }

    /// The world this process's environment describes.
    pub fn from_env() -> Result<Self, DistError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The world that the variables `var` returns describe: torchrun's when `WORLD_SIZE`
    /// is set, else Slurm's when `SLURM_PROCID` is, else a lone process.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, DistError> {
        let world = if var("WORLD_SIZE").is_some() {
            let required = |name: &str| {
                var(name).ok_or_else(|| DistError::env(name, "", "is not set (torchrun sets it)"))
            };
            let rank = number(&var, "RANK")?
                .ok_or_else(|| DistError::env("RANK", "", "is not set (torchrun sets it)"))?;
            World {
                rank,
                size: number(&var, "WORLD_SIZE")?.unwrap_or(0),
                local_rank: number(&var, "LOCAL_RANK")?.unwrap_or(rank),
                master_addr: required("MASTER_ADDR")?,
                master_port: port(&var)?.ok_or_else(|| {
                    DistError::env("MASTER_PORT", "", "is not set (torchrun sets it)")
                })?,
                launcher: Launcher::Torchrun,
            }
        } else if var("SLURM_PROCID").is_some() {
            let rank = number(&var, "SLURM_PROCID")?.unwrap_or(0);
            let nodes = var("SLURM_JOB_NODELIST").or_else(|| var("SLURM_NODELIST"));
            let master_addr = match (var("MASTER_ADDR"), nodes) {
                (Some(addr), _) => addr,
                (None, Some(list)) => first_host(&list).ok_or_else(|| {
                    DistError::env(
                        "SLURM_JOB_NODELIST",
                        &list,
                        "names no host; set MASTER_ADDR to rank 0's host",
                    )
                })?,
                (None, None) => {
                    return Err(DistError::env(
                        "MASTER_ADDR",
                        "",
                        "is not set and Slurm gave no SLURM_JOB_NODELIST: set it to rank 0's host",
                    ));
                }
            };
            World {
                rank,
                size: number(&var, "SLURM_NTASKS")?.ok_or_else(|| {
                    DistError::env(
                        "SLURM_NTASKS",
                        "",
                        "is not set: start the run with srun --ntasks",
                    )
                })?,
                local_rank: number(&var, "SLURM_LOCALID")?.unwrap_or(0),
                master_addr,
                master_port: port(&var)?.unwrap_or(DEFAULT_PORT),
                launcher: Launcher::Slurm,
            }
        } else {
            return Ok(World::single());
        };
        world.check()?;
        Ok(world)
    }

    fn check(&self) -> Result<(), DistError> {
        let problem = if self.size == 0 {
            Some("the world size is 0".to_string())
        } else if self.rank >= self.size {
            Some(format!(
                "rank {} is not below the world size {}",
                self.rank, self.size
            ))
        } else if self.master_addr.trim().is_empty() {
            Some("the master address is empty".to_string())
        } else {
            None
        };
        match problem {
            Some(p) => Err(DistError::Rendezvous(format!(
                "{p} (from {}'s variables): start one process per GPU with ranks 0..size",
                self.launcher
            ))),
            None => Ok(()),
        }
    }

    /// Whether this process writes checkpoints and metrics.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }
}

/// A variable holding a whole number, or `None` when it is not set.
fn number(var: &impl Fn(&str) -> Option<String>, name: &str) -> Result<Option<usize>, DistError> {
    var(name)
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| DistError::env(name, &v, "is not a whole number"))
        })
        .transpose()
}

fn port(var: &impl Fn(&str) -> Option<String>) -> Result<Option<u16>, DistError> {
    var("MASTER_PORT")
        .map(|v| match v.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(DistError::env(
                "MASTER_PORT",
                &v,
                "is not a port (1 to 65535)",
            )),
        })
        .transpose()
}

/// The first host of a Slurm node list: `gpu[03-05,07],cpu1` gives `gpu03`.
pub fn first_host(list: &str) -> Option<String> {
    let list = list.trim();
    let (prefix, rest) = match list.find(['[', ',']) {
        Some(i) if list[i..].starts_with('[') => (&list[..i], &list[i + 1..]),
        Some(i) => (&list[..i], ""),
        None => (list, ""),
    };
    let first = rest.split([',', '-', ']']).next().unwrap_or("");
    let host = format!("{prefix}{first}");
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn world(vars: &[(&str, &str)]) -> Result<World, DistError> {
        World::from_vars(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn torchruns_variables_name_the_process() {
        let w = world(&[
            ("RANK", "5"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node7"),
            ("MASTER_PORT", "29511"),
        ])
        .unwrap();
        let want = World {
            rank: 5,
            size: 8,
            local_rank: 1,
            master_addr: "node7".into(),
            master_port: 29511,
            launcher: Launcher::Torchrun,
        };
        assert_eq!(w, want);
        assert!(!w.is_main());
    }

    #[test]
    fn slurms_variables_name_the_process_and_rank_zeros_host() {
        let w = world(&[
            ("SLURM_PROCID", "3"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_JOB_NODELIST", "gpu[07-08]"),
        ])
        .unwrap();
        assert_eq!((w.rank, w.size, w.local_rank), (3, 4, 1));
        assert_eq!(
            (w.master_addr.as_str(), w.master_port),
            ("gpu07", DEFAULT_PORT)
        );
        assert_eq!(w.launcher, Launcher::Slurm);
        // MASTER_ADDR and MASTER_PORT win over the node list.
        let w = world(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_JOB_NODELIST", "gpu[07-08]"),
            ("MASTER_ADDR", "10.0.0.2"),
            ("MASTER_PORT", "4000"),
        ])
        .unwrap();
        assert_eq!((w.master_addr.as_str(), w.master_port), ("10.0.0.2", 4000));
        assert!(w.is_main());
    }

    #[test]
    fn no_launcher_is_one_process() {
        assert_eq!(world(&[]).unwrap(), World::single());
    }

    #[test]
    fn first_hosts_of_slurm_node_lists() {
        for (list, host) in [
            ("node01", "node01"),
            ("node[01-04]", "node01"),
            ("gpu[003,005-007],cpu1", "gpu003"),
            ("a-b[10-11]", "a-b10"),
            ("n1,n2", "n1"),
            (" n9 ", "n9"),
        ] {
            assert_eq!(first_host(list).as_deref(), Some(host), "{list}");
        }
        assert_eq!(first_host(""), None);
    }

    #[test]
    fn bad_variables_are_named() {
        let torchrun = |rank: &str, size: &str, port: &str| {
            world(&[
                ("RANK", rank),
                ("WORLD_SIZE", size),
                ("MASTER_ADDR", "h"),
                ("MASTER_PORT", port),
            ])
            .unwrap_err()
            .to_string()
        };
        for (err, want) in [
            (torchrun("x", "2", "1"), "RANK=x is not a whole number"),
            (
                torchrun("2", "2", "1"),
                "rank 2 is not below the world size 2",
            ),
            (torchrun("0", "0", "1"), "the world size is 0"),
            (
                torchrun("0", "2", "70000"),
                "MASTER_PORT=70000 is not a port",
            ),
            (torchrun("0", "2", "0"), "MASTER_PORT=0 is not a port"),
        ] {
            assert!(err.contains(want), "{err}");
        }
        let err = world(&[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_PORT", "1")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("MASTER_ADDR is not set"), "{err}");
        let err = world(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("MASTER_ADDR is not set"), "{err}");
    }
}
