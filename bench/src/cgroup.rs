//! Lambda-sized control groups: a process given the CPU share and the memory limit Lambda gives
//! a function of a memory size, on cgroup v1 or v2.
//!
//! Lambda allots CPU in proportion to memory: 1,769 MB is one vCPU, so 128 MB is about 7% of
//! one. A group for `memory_mb` gets a CFS quota of `floor(100,000 × memory_mb / 1769)` µs per
//! 100,000 µs period (128 MB: 7,235 µs; rounded down, so the function never gets more CPU than
//! Lambda would give it) and a memory limit of `memory_mb` MiB (Lambda's "MB" are MiB).
//!
//! - cgroup v1: `cpu.cfs_period_us` and `cpu.cfs_quota_us` in the `cpu` hierarchy,
//!   `memory.limit_in_bytes` in the `memory` one; the CPU the group used from `cpuacct.usage`
//!   (ns) when the `cpuacct` controller is mounted (with `cpu` or on its own, the group then
//!   has a directory there too); the memory peak from `memory.max_usage_in_bytes`.
//! - cgroup v2: `cpu.max` (`QUOTA PERIOD`) and `memory.max`; the CPU from `cpu.stat`'s
//!   `usage_usec`, the memory peak from `memory.peak` where the kernel has it (5.19 on).
//!
//! The version is read from `/proc/self/mountinfo`: v1 when a `cgroup` hierarchy carries the
//! `cpu` or the `memory` controller, else v2 when a `cgroup2` file system is mounted. Groups
//! are made next to this process's own (its group in each hierarchy, from `/proc/self/cgroup`),
//! named `usersync-bench-<pid>-<label>`; on v2 that group must hand `cpu` and `memory` to its
//! children (`cgroup.subtree_control`), which is tried when it does not yet. A process joins by
//! its id written to `cgroup.procs`; a group is removed (`rmdir`) once its processes exited.
//!
//! When cgroups cannot be used, [`Cgroups::detect`] and [`Cgroups::try_out`] say why as an
//! [`Unusable`], which the benchmark prints and records instead of running unthrottled. Every
//! path is read under a root directory, `/` here and a fake cgroupfs tree in the tests.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

/// The CFS period every group uses, in µs (the kernel's default).
pub const CFS_PERIOD_US: u64 = 100_000;

/// The memory size at which Lambda gives a function one whole vCPU.
pub const ONE_VCPU_MB: u32 = 1_769;

/// Lambda's smallest and largest memory sizes.
pub const LAMBDA_MEMORY_MB: std::ops::RangeInclusive<u32> = 128..=10_240;

/// The CFS quota, in µs per [`CFS_PERIOD_US`], for a function of `memory_mb`: the period times
/// `memory_mb / 1769`, rounded down.
pub fn cpu_quota_us(memory_mb: u32) -> u64 {
    CFS_PERIOD_US * u64::from(memory_mb) / u64::from(ONE_VCPU_MB)
}

/// The memory limit for a function of `memory_mb`: that many MiB.
pub fn memory_limit_bytes(memory_mb: u32) -> u64 {
    u64::from(memory_mb) << 20
}

/// Which cgroup interface the groups use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupVersion {
    V1,
    V2,
}

impl CgroupVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "cgroup v1",
            CgroupVersion::V2 => "cgroup v2",
        }
    }
}

/// Where a group's CPU time is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuTimeSource {
    /// v1 `cpuacct.usage`, in ns.
    CpuacctUsage,
    /// v2 `cpu.stat` `usage_usec`.
    CpuStatUsage,
    /// No accounting controller: the caller reads the process itself (`/proc/<pid>/stat`).
    Process,
}

impl CpuTimeSource {
    pub fn describe(self) -> &'static str {
        match self {
            CpuTimeSource::CpuacctUsage => "the group's cpuacct.usage (cgroup v1)",
            CpuTimeSource::CpuStatUsage => "the group's cpu.stat usage_usec (cgroup v2)",
            CpuTimeSource::Process => {
                "the process's utime + stime (no cpuacct controller is mounted)"
            }
        }
    }
}

/// Why the benchmark cannot put a process in a Lambda-sized group here.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    #[error("not running as root (effective uid {euid}): only root can make cgroups here")]
    NotRoot { euid: u32 },
    #[error("no cgroup file system is mounted (none listed in {})", mountinfo.display())]
    NothingMounted { mountinfo: PathBuf },
    #[error("cgroup v1 has no {controller} controller mounted (its hierarchies: {mounted})")]
    V1Missing {
        controller: &'static str,
        mounted: String,
    },
    #[error("cgroup v2 does not offer the {controller} controller in {} (cgroup.controllers: {available:?})", dir.display())]
    V2Missing {
        dir: PathBuf,
        controller: &'static str,
        available: String,
    },
    #[error("cgroup v2 does not hand the {controllers} controller(s) to the children of {} (cgroup.subtree_control), and enabling them failed", dir.display())]
    V2NotDelegated {
        dir: PathBuf,
        controllers: String,
        #[source]
        source: io::Error,
    },
    #[error("the cgroup file system at {} is mounted read-only", dir.display())]
    ReadOnly { dir: PathBuf },
    #[error("failed to read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("a trial group could not be set up")]
    Trial(#[source] CgroupError),
}

/// A group could not be made, joined, read or removed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("failed to create the cgroup {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to write {value:?} to {}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} holds {text:?}, not the number expected", path.display())]
    Parse { path: PathBuf, text: String },
    #[error("process {pid} is not in the cgroup {} after joining it", dir.display())]
    NotJoined { pid: u32, dir: PathBuf },
    #[error("failed to remove the cgroup {}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One mounted cgroup file system, from `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mount {
    /// The directory of the hierarchy mounted (`/` unless a sub-tree is).
    root: String,
    mount_point: String,
    read_only: bool,
    /// v1: the controllers this hierarchy carries (`cpu`, `cpuacct`, …) and its name (`name=…`).
    /// Empty for v2.
    options: Vec<String>,
    v2: bool,
}

/// The v1 controllers a hierarchy's options may name.
const V1_CONTROLLERS: [&str; 14] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

impl Mount {
    fn has(&self, controller: &str) -> bool {
        self.options.iter().any(|o| o == controller)
    }

    /// The v1 hierarchy's label for messages: its controllers and name, such as `cpu,cpuacct`.
    fn label(&self) -> String {
        self.options.join(",")
    }
}

/// The cgroup mounts listed in a mountinfo text.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split_whitespace().collect();
            let mut after = after.split_whitespace();
            let fstype = after.next()?;
            let _source = after.next()?;
            let super_options = after.next().unwrap_or("");
            let v2 = match fstype {
                "cgroup" => false,
                "cgroup2" => true,
                _ => return None,
            };
            let mount_options = fields.get(5)?;
            let options = if v2 {
                Vec::new()
            } else {
                super_options
                    .split(',')
                    .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                    .map(str::to_owned)
                    .collect()
            };
            Some(Mount {
                root: unescape(fields.get(3)?),
                mount_point: unescape(fields.get(4)?),
                read_only: mount_options.split(',').any(|o| o == "ro"),
                options,
                v2,
            })
        })
        .collect()
}

/// mountinfo escapes a space, tab, newline and backslash in a path as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)))
            .and_then(|digits| u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This process's group in the hierarchy carrying `controller` (v1), or in the unified one
/// (`controller` `None`), from a `/proc/self/cgroup` text.
fn own_group(text: &str, controller: Option<&str>) -> Option<String> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        let matches = match controller {
            Some(wanted) => controllers.split(',').any(|c| c == wanted),
            None => id == "0" && controllers.is_empty(),
        };
        matches.then(|| path.to_owned())
    })
}

/// The directory of group `group` (a path in the hierarchy) under `mount`, seen from `root`.
fn group_dir(root: &Path, mount: &Mount, group: Option<&str>) -> PathBuf {
    let mount_point = under(root, &mount.mount_point);
    let relative = group
        .and_then(|group| {
            let mount_root = mount.root.trim_end_matches('/');
            group
                .strip_prefix(mount_root)
                .filter(|rest| rest.is_empty() || rest.starts_with('/'))
                .map(str::to_owned)
        })
        // A group outside the mounted sub-tree (or not listed): the mount's top.
        .unwrap_or_default();
    let relative = relative.trim_start_matches('/');
    if relative.is_empty() {
        mount_point
    } else {
        mount_point.join(relative)
    }
}

/// The absolute path `path` of the machine, under `root`.
fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Where groups are made, per interface.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Parents {
    V1 {
        cpu: PathBuf,
        memory: PathBuf,
        /// `Some(cpu)` when co-mounted with `cpu`; `None` when not mounted.
        cpuacct: Option<PathBuf>,
    },
    V2 {
        dir: PathBuf,
    },
}

/// The cgroup file system of this machine, ready to make Lambda-sized groups in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroups {
    parents: Parents,
    /// The prefix of every group's name: `usersync-bench-<pid>`.
    prefix: String,
}

impl Cgroups {
    /// [`Cgroups::detect`] on this machine, for this process.
    pub fn detect_here() -> Result<Cgroups, Unusable> {
        let euid = procfs::process::Process::myself()
            .and_then(|me| me.status())
            .map_or(u32::MAX, |status| status.euid);
        Cgroups::detect(Path::new("/"), euid, std::process::id())
    }

    /// Finds the cgroup interface under `root` (`/proc/self/mountinfo`, `/proc/self/cgroup`
    /// and the mounts they name, all read under `root`) for a process of effective uid `euid`,
    /// whose groups are named after `pid`. On v2 this enables `cpu` and `memory` for the
    /// children of this process's group when they are not yet.
    pub fn detect(root: &Path, euid: u32, pid: u32) -> Result<Cgroups, Unusable> {
        if euid != 0 {
            return Err(Unusable::NotRoot { euid });
        }
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path).map_err(|source| Unusable::Read { path, source })
        };
        let mountinfo_path = under(root, "/proc/self/mountinfo");
        let mounts = parse_mountinfo(&read(mountinfo_path.clone())?);
        let own = read(under(root, "/proc/self/cgroup"))?;
        let prefix = format!("usersync-bench-{pid}");
        let v1: Vec<&Mount> = mounts.iter().filter(|m| !m.v2).collect();
        let v1_in_use = v1.iter().any(|m| m.has("cpu") || m.has("memory"));
        if v1_in_use || (!v1.is_empty() && !mounts.iter().any(|m| m.v2)) {
            let hierarchy = |controller: &'static str| {
                v1.iter()
                    .copied()
                    .find(|m| m.has(controller))
                    .ok_or_else(|| Unusable::V1Missing {
                        controller,
                        mounted: v1.iter().map(|m| m.label()).collect::<Vec<_>>().join("; "),
                    })
            };
            let writable = |mount: &Mount, dir: &Path| {
                if mount.read_only {
                    Err(Unusable::ReadOnly {
                        dir: dir.to_path_buf(),
                    })
                } else {
                    Ok(())
                }
            };
            let dir_of = |mount: &Mount, controller: &str| {
                group_dir(root, mount, own_group(&own, Some(controller)).as_deref())
            };
            let cpu_mount = hierarchy("cpu")?;
            let memory_mount = hierarchy("memory")?;
            let cpu = dir_of(cpu_mount, "cpu");
            let memory = dir_of(memory_mount, "memory");
            writable(cpu_mount, &cpu)?;
            writable(memory_mount, &memory)?;
            let cpuacct = match hierarchy("cpuacct") {
                Ok(mount) if mount == cpu_mount => Some(cpu.clone()),
                Ok(mount) if !mount.read_only => Some(dir_of(mount, "cpuacct")),
                _ => None,
            };
            return Ok(Cgroups {
                parents: Parents::V1 {
                    cpu,
                    memory,
                    cpuacct,
                },
                prefix,
            });
        }
        let Some(unified) = mounts.iter().find(|m| m.v2) else {
            return Err(Unusable::NothingMounted {
                mountinfo: mountinfo_path,
            });
        };
        let dir = group_dir(root, unified, own_group(&own, None).as_deref());
        if unified.read_only {
            return Err(Unusable::ReadOnly { dir });
        }
        let available = read(dir.join("cgroup.controllers"))?;
        for controller in ["cpu", "memory"] {
            if !available.split_whitespace().any(|c| c == controller) {
                return Err(Unusable::V2Missing {
                    dir,
                    controller,
                    available: available.trim().to_owned(),
                });
            }
        }
        let subtree_path = dir.join("cgroup.subtree_control");
        let subtree = read(subtree_path.clone())?;
        let missing: Vec<&str> = ["cpu", "memory"]
            .into_iter()
            .filter(|c| !subtree.split_whitespace().any(|s| s == *c))
            .collect();
        if !missing.is_empty() {
            let enable: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
            std::fs::write(&subtree_path, enable.join(" ")).map_err(|source| {
                Unusable::V2NotDelegated {
                    dir: dir.clone(),
                    controllers: missing.join(" and "),
                    source,
                }
            })?;
        }
        Ok(Cgroups {
            parents: Parents::V2 { dir },
            prefix,
        })
    }

    pub fn version(&self) -> CgroupVersion {
        match self.parents {
            Parents::V1 { .. } => CgroupVersion::V1,
            Parents::V2 { .. } => CgroupVersion::V2,
        }
    }

    /// Where a group's CPU time comes from.
    pub fn cpu_time_source(&self) -> CpuTimeSource {
        match &self.parents {
            Parents::V1 { cpuacct: None, .. } => CpuTimeSource::Process,
            Parents::V1 { .. } => CpuTimeSource::CpuacctUsage,
            Parents::V2 { .. } => CpuTimeSource::CpuStatUsage,
        }
    }

    /// The directories groups are made in (v1: one per hierarchy used).
    pub fn parent_dirs(&self) -> Vec<PathBuf> {
        match &self.parents {
            Parents::V1 {
                cpu,
                memory,
                cpuacct,
            } => {
                let mut dirs = vec![cpu.clone(), memory.clone()];
                if let Some(acct) = cpuacct.as_ref().filter(|acct| *acct != cpu) {
                    dirs.push(acct.clone());
                }
                dirs
            }
            Parents::V2 { dir } => vec![dir.clone()],
        }
    }

    /// Makes a group `usersync-bench-<pid>-<label>` with the CPU quota and the memory limit of
    /// a `memory_mb` function. A group left over under that name (from a run that was killed)
    /// is reused and set again.
    pub fn create(&self, label: &str, memory_mb: u32) -> Result<Group, CgroupError> {
        let name = format!("{}-{label}", self.prefix);
        let mut group = match &self.parents {
            Parents::V1 {
                cpu,
                memory,
                cpuacct,
            } => {
                let cpu_dir = cpu.join(&name);
                let memory_dir = memory.join(&name);
                let acct_dir = cpuacct.as_ref().map(|acct| acct.join(&name));
                let mut dirs = vec![cpu_dir.clone(), memory_dir.clone()];
                if let Some(acct) = acct_dir.as_ref().filter(|acct| **acct != cpu_dir) {
                    dirs.push(acct.clone());
                }
                Group {
                    version: CgroupVersion::V1,
                    memory_mb,
                    dirs,
                    cpu: cpu_dir,
                    memory: memory_dir,
                    cpuacct: acct_dir,
                    made: Vec::new(),
                }
            }
            Parents::V2 { dir } => {
                let dir = dir.join(&name);
                Group {
                    version: CgroupVersion::V2,
                    memory_mb,
                    dirs: vec![dir.clone()],
                    cpu: dir.clone(),
                    memory: dir.clone(),
                    cpuacct: None,
                    made: Vec::new(),
                }
            }
        };
        for dir in group.dirs.clone() {
            match std::fs::create_dir(&dir) {
                Ok(()) => group.made.push(dir),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    group.made.push(dir);
                }
                Err(source) => return Err(CgroupError::Create { path: dir, source }),
            }
        }
        group.set_limits()?;
        Ok(group)
    }

    /// Makes a 128 MB group and removes it again: the proof, before a benchmark relies on it,
    /// that groups can be made and limited here.
    pub fn try_out(&self) -> Result<(), Unusable> {
        let group = self
            .create("trial", *LAMBDA_MEMORY_MB.start())
            .map_err(Unusable::Trial)?;
        group.remove().map_err(Unusable::Trial)
    }
}

/// A group with a CPU quota and a memory limit; removed by [`Group::remove`], or when dropped
/// (then as well as it can, with a warning if it cannot).
#[derive(Debug)]
pub struct Group {
    version: CgroupVersion,
    memory_mb: u32,
    /// Every directory of the group: v1, one per hierarchy; v2, one.
    dirs: Vec<PathBuf>,
    cpu: PathBuf,
    memory: PathBuf,
    cpuacct: Option<PathBuf>,
    /// The directories made and not yet removed.
    made: Vec<PathBuf>,
}

/// How often the group's processes were held back by the quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Throttling {
    /// Periods in which the group ran.
    pub periods: u64,
    /// Of those, the periods in which it used up its quota and waited.
    pub throttled: u64,
}

impl Group {
    pub fn memory_mb(&self) -> u32 {
        self.memory_mb
    }

    /// Every directory of the group.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    fn set_limits(&self) -> Result<(), CgroupError> {
        let quota = cpu_quota_us(self.memory_mb);
        let limit = memory_limit_bytes(self.memory_mb);
        match self.version {
            CgroupVersion::V1 => {
                write(
                    &self.cpu.join("cpu.cfs_period_us"),
                    &CFS_PERIOD_US.to_string(),
                )?;
                write(&self.cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
                write(
                    &self.memory.join("memory.limit_in_bytes"),
                    &limit.to_string(),
                )
            }
            CgroupVersion::V2 => {
                write(
                    &self.cpu.join("cpu.max"),
                    &format!("{quota} {CFS_PERIOD_US}"),
                )?;
                write(&self.memory.join("memory.max"), &limit.to_string())
            }
        }
    }

    /// Moves process `pid` (all its threads) into the group, and checks it is there.
    pub fn join(&self, pid: u32) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        for dir in &self.dirs {
            if !self.pids_in(dir)?.contains(&pid) {
                return Err(CgroupError::NotJoined {
                    pid,
                    dir: dir.clone(),
                });
            }
        }
        Ok(())
    }

    /// The processes in the group (in its CPU hierarchy).
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        self.pids_in(&self.cpu)
    }

    fn pids_in(&self, dir: &Path) -> Result<Vec<u32>, CgroupError> {
        let path = dir.join("cgroup.procs");
        read(&path)?
            .split_whitespace()
            .map(|pid| {
                pid.parse().map_err(|_| CgroupError::Parse {
                    path: path.clone(),
                    text: pid.to_owned(),
                })
            })
            .collect()
    }

    /// CPU time the group's processes used since they joined; `None` without an accounting
    /// controller ([`CpuTimeSource::Process`]: read the process instead).
    pub fn cpu_time(&self) -> Result<Option<Duration>, CgroupError> {
        match self.version {
            CgroupVersion::V1 => match &self.cpuacct {
                Some(dir) => {
                    let path = dir.join("cpuacct.usage");
                    Ok(Some(Duration::from_nanos(number(&path, &read(&path)?)?)))
                }
                None => Ok(None),
            },
            CgroupVersion::V2 => {
                let path = self.cpu.join("cpu.stat");
                let usec = stat_field(&path, &read(&path)?, "usage_usec")?;
                Ok(Some(Duration::from_micros(usec)))
            }
        }
    }

    /// The group's peak memory use (page cache and kernel memory charged to it included) since
    /// it was made; `None` on v2 kernels without `memory.peak`.
    pub fn memory_peak_bytes(&self) -> Result<Option<u64>, CgroupError> {
        let path = match self.version {
            CgroupVersion::V1 => self.memory.join("memory.max_usage_in_bytes"),
            CgroupVersion::V2 => self.memory.join("memory.peak"),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => number(&path, &text).map(Some),
            Err(err)
                if err.kind() == io::ErrorKind::NotFound && self.version == CgroupVersion::V2 =>
            {
                Ok(None)
            }
            Err(source) => Err(CgroupError::Read { path, source }),
        }
    }

    /// How often the quota held the group back, from `cpu.stat` (both versions).
    pub fn throttling(&self) -> Result<Throttling, CgroupError> {
        let path = self.cpu.join("cpu.stat");
        let text = read(&path)?;
        Ok(Throttling {
            periods: stat_field(&path, &text, "nr_periods")?,
            throttled: stat_field(&path, &text, "nr_throttled")?,
        })
    }

    /// Removes the group; its processes must have exited (a group still holding one cannot be
    /// removed: this waits up to a second for them to go).
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.remove_dirs()
    }

    fn remove_dirs(&mut self) -> Result<(), CgroupError> {
        while let Some(dir) = self.made.pop() {
            let mut attempts = 0;
            loop {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(err) if err.kind() == io::ErrorKind::NotFound => break,
                    // EBUSY: a process is still in it, exiting.
                    Err(err) if err.raw_os_error() == Some(16) && attempts < 20 => {
                        attempts += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(source) => {
                        self.made.push(dir.clone());
                        return Err(CgroupError::Remove { path: dir, source });
                    }
                }
            }
        }
        Ok(())
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Err(err) = self.remove_dirs() {
            eprintln!(
                "warning: {}; remove it by hand",
                deployer::errors::chain(&err)
            );
        }
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_owned(),
        source,
    })
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn number(path: &Path, text: &str) -> Result<u64, CgroupError> {
    text.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        text: text.trim().to_owned(),
    })
}

/// The value of `field` in a `cpu.stat`-like text of `name value` lines.
fn stat_field(path: &Path, text: &str, field: &str) -> Result<u64, CgroupError> {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(' ')?;
            (name == field).then_some(value)
        })
        .ok_or_else(|| CgroupError::Parse {
            path: path.to_path_buf(),
            text: format!("no {field} line in {:?}", text.trim()),
        })
        .and_then(|value| number(path, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake machine: `/proc/self/{mountinfo,cgroup}` and the cgroup directories they name,
    /// under a temporary root.
    struct Fake {
        root: tempfile::TempDir,
    }

    impl Fake {
        fn new(mountinfo: &str, own: &str) -> Fake {
            let root = tempfile::tempdir().unwrap();
            let proc_self = root.path().join("proc/self");
            std::fs::create_dir_all(&proc_self).unwrap();
            std::fs::write(proc_self.join("mountinfo"), mountinfo).unwrap();
            std::fs::write(proc_self.join("cgroup"), own).unwrap();
            Fake { root }
        }

        fn path(&self, path: &str) -> PathBuf {
            under(self.root.path(), path)
        }

        fn dir(&self, path: &str) -> PathBuf {
            let dir = self.path(path);
            std::fs::create_dir_all(&dir).unwrap();
            dir
        }

        fn file(&self, path: &str, text: &str) {
            let path = self.path(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }

        fn read(&self, path: &str) -> String {
            std::fs::read_to_string(self.path(path)).unwrap_or_else(|err| panic!("{path}: {err}"))
        }

        fn detect(&self) -> Result<Cgroups, Unusable> {
            Cgroups::detect(self.root.path(), 0, 4242)
        }
    }

    /// The kernel drops a group's control files with the group; a plain directory must be
    /// emptied first.
    fn empty(group: &Group) {
        for dir in group.dirs() {
            for entry in std::fs::read_dir(dir).unwrap() {
                std::fs::remove_file(entry.unwrap().path()).unwrap();
            }
        }
    }

    /// This machine's layout: cgroup v1 with cpu and cpuacct mounted apart, the memory group
    /// a nested one, and a cgroup2 mount with no controllers beside them (hybrid).
    const V1_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const V1_OWN: &str = "\
9:name=systemd:/
4:memory:/sandbox/job
2:cpuacct:/
1:cpu:/
0::/
";

    #[test]
    fn quotas_are_the_memory_share_of_one_core_rounded_down() {
        assert_eq!(cpu_quota_us(128), 7_235, "100000 × 128 / 1769 = 7235.7");
        assert_eq!(cpu_quota_us(256), 14_471);
        assert_eq!(cpu_quota_us(512), 28_942);
        assert_eq!(cpu_quota_us(1_024), 57_885);
        assert_eq!(cpu_quota_us(1_769), CFS_PERIOD_US, "one vCPU");
        assert_eq!(cpu_quota_us(3_538), 2 * CFS_PERIOD_US);
        assert_eq!(memory_limit_bytes(128), 134_217_728);
    }

    #[test]
    fn mountinfo_lists_the_cgroup_mounts_with_their_controllers() {
        let mounts = parse_mountinfo(
            "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct ro,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct\n\
             41 31 0:38 /docker/abc /sys/fs/cgroup\\040x rw - cgroup2 cgroup2 rw,nsdelegate\n\
             50 20 8:1 / / rw - ext4 /dev/sda1 rw\n",
        );
        assert_eq!(
            mounts,
            [
                Mount {
                    root: "/".into(),
                    mount_point: "/sys/fs/cgroup/cpu,cpuacct".into(),
                    read_only: true,
                    options: vec!["cpu".into(), "cpuacct".into()],
                    v2: false,
                },
                Mount {
                    root: "/docker/abc".into(),
                    mount_point: "/sys/fs/cgroup x".into(),
                    read_only: false,
                    options: Vec::new(),
                    v2: true,
                },
            ]
        );
    }

    #[test]
    fn a_group_in_a_mounted_sub_tree_is_found_below_the_mount_point() {
        let mount = Mount {
            root: "/docker/abc".into(),
            mount_point: "/sys/fs/cgroup".into(),
            read_only: false,
            options: Vec::new(),
            v2: true,
        };
        let root = Path::new("/fake");
        assert_eq!(
            group_dir(root, &mount, Some("/docker/abc/job")),
            Path::new("/fake/sys/fs/cgroup/job")
        );
        assert_eq!(
            group_dir(root, &mount, Some("/docker/abc")),
            Path::new("/fake/sys/fs/cgroup")
        );
        assert_eq!(
            group_dir(root, &mount, Some("/docker/abcdef")),
            Path::new("/fake/sys/fs/cgroup"),
            "not inside the mounted sub-tree"
        );
        assert_eq!(
            group_dir(root, &mount, None),
            Path::new("/fake/sys/fs/cgroup")
        );
    }

    #[test]
    fn v1_groups_get_the_quota_the_limit_and_a_cpuacct_directory_and_are_removed() {
        let fake = Fake::new(V1_MOUNTINFO, V1_OWN);
        fake.dir("/sys/fs/cgroup/cpu");
        fake.dir("/sys/fs/cgroup/cpuacct");
        fake.dir("/sys/fs/cgroup/memory/sandbox/job");
        let cgroups = fake.detect().unwrap();
        assert_eq!(cgroups.version(), CgroupVersion::V1);
        assert_eq!(cgroups.cpu_time_source(), CpuTimeSource::CpuacctUsage);
        assert_eq!(
            cgroups.parent_dirs(),
            [
                fake.path("/sys/fs/cgroup/cpu"),
                fake.path("/sys/fs/cgroup/memory/sandbox/job"),
                fake.path("/sys/fs/cgroup/cpuacct"),
            ]
        );

        let group = cgroups.create("128mb", 128).unwrap();
        let cpu = "/sys/fs/cgroup/cpu/usersync-bench-4242-128mb";
        let memory = "/sys/fs/cgroup/memory/sandbox/job/usersync-bench-4242-128mb";
        let acct = "/sys/fs/cgroup/cpuacct/usersync-bench-4242-128mb";
        assert_eq!(fake.read(&format!("{cpu}/cpu.cfs_period_us")), "100000");
        assert_eq!(fake.read(&format!("{cpu}/cpu.cfs_quota_us")), "7235");
        assert_eq!(
            fake.read(&format!("{memory}/memory.limit_in_bytes")),
            "134217728"
        );

        group.join(777).unwrap();
        for dir in [cpu, memory, acct] {
            assert_eq!(fake.read(&format!("{dir}/cgroup.procs")), "777", "{dir}");
        }
        assert_eq!(group.pids().unwrap(), [777]);

        fake.file(&format!("{acct}/cpuacct.usage"), "1234567000\n");
        assert_eq!(
            group.cpu_time().unwrap(),
            Some(Duration::from_micros(1_234_567))
        );
        fake.file(&format!("{memory}/memory.max_usage_in_bytes"), "9437184\n");
        assert_eq!(group.memory_peak_bytes().unwrap(), Some(9_437_184));
        fake.file(
            &format!("{cpu}/cpu.stat"),
            "nr_periods 40\nnr_throttled 31\nthrottled_time 2500000000\n",
        );
        assert_eq!(
            group.throttling().unwrap(),
            Throttling {
                periods: 40,
                throttled: 31
            }
        );

        empty(&group);
        group.remove().unwrap();
        for dir in [cpu, memory, acct] {
            assert!(!fake.path(dir).exists(), "{dir} removed");
        }
    }

    #[test]
    fn v1_with_cpu_and_cpuacct_together_uses_one_directory_for_both() {
        let fake = Fake::new(
            "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
            "3:cpu,cpuacct:/\n2:memory:/\n",
        );
        fake.dir("/sys/fs/cgroup/cpu,cpuacct");
        fake.dir("/sys/fs/cgroup/memory");
        let cgroups = fake.detect().unwrap();
        assert_eq!(cgroups.cpu_time_source(), CpuTimeSource::CpuacctUsage);
        let group = cgroups.create("pf4-0", 128).unwrap();
        assert_eq!(group.dirs().len(), 2);
        let dir = "/sys/fs/cgroup/cpu,cpuacct/usersync-bench-4242-pf4-0";
        fake.file(&format!("{dir}/cpuacct.usage"), "2000\n");
        assert_eq!(group.cpu_time().unwrap(), Some(Duration::from_nanos(2000)));
        empty(&group);
        group.remove().unwrap();
    }

    #[test]
    fn v1_without_cpuacct_reads_the_cpu_from_the_process() {
        let fake = Fake::new(
            "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
             35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
            "3:cpu:/\n2:memory:/\n",
        );
        fake.dir("/sys/fs/cgroup/cpu");
        fake.dir("/sys/fs/cgroup/memory");
        let cgroups = fake.detect().unwrap();
        assert_eq!(cgroups.cpu_time_source(), CpuTimeSource::Process);
        let group = cgroups.create("x", 1769).unwrap();
        assert_eq!(
            fake.read("/sys/fs/cgroup/cpu/usersync-bench-4242-x/cpu.cfs_quota_us"),
            "100000"
        );
        assert_eq!(group.cpu_time().unwrap(), None);
        empty(&group);
        group.remove().unwrap();
    }

    #[test]
    fn v2_groups_get_cpu_max_and_memory_max_after_the_controllers_are_handed_down() {
        let fake = Fake::new(
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
            "0::/bench.slice\n",
        );
        fake.file(
            "/sys/fs/cgroup/bench.slice/cgroup.controllers",
            "cpuset cpu io memory pids\n",
        );
        fake.file("/sys/fs/cgroup/bench.slice/cgroup.subtree_control", "cpu\n");
        let cgroups = fake.detect().unwrap();
        assert_eq!(cgroups.version(), CgroupVersion::V2);
        assert_eq!(cgroups.cpu_time_source(), CpuTimeSource::CpuStatUsage);
        assert_eq!(
            fake.read("/sys/fs/cgroup/bench.slice/cgroup.subtree_control"),
            "+memory",
            "only the missing controller is enabled"
        );

        let group = cgroups.create("256mb", 256).unwrap();
        let dir = "/sys/fs/cgroup/bench.slice/usersync-bench-4242-256mb";
        assert_eq!(fake.read(&format!("{dir}/cpu.max")), "14471 100000");
        assert_eq!(fake.read(&format!("{dir}/memory.max")), "268435456");
        group.join(99).unwrap();
        assert_eq!(fake.read(&format!("{dir}/cgroup.procs")), "99");

        fake.file(
            &format!("{dir}/cpu.stat"),
            "usage_usec 5000\nuser_usec 4000\nsystem_usec 1000\nnr_periods 12\nnr_throttled 3\nthrottled_usec 900\n",
        );
        assert_eq!(group.cpu_time().unwrap(), Some(Duration::from_micros(5000)));
        assert_eq!(
            group.throttling().unwrap(),
            Throttling {
                periods: 12,
                throttled: 3
            }
        );
        assert_eq!(group.memory_peak_bytes().unwrap(), None, "no memory.peak");
        fake.file(&format!("{dir}/memory.peak"), "1048576\n");
        assert_eq!(group.memory_peak_bytes().unwrap(), Some(1_048_576));

        empty(&group);
        group.remove().unwrap();
        assert!(!fake.path(dir).exists());
    }

    #[test]
    fn a_group_is_removed_when_dropped() {
        let fake = Fake::new(
            "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/\n",
        );
        fake.file("/sys/fs/cgroup/cgroup.controllers", "cpu memory\n");
        fake.file("/sys/fs/cgroup/cgroup.subtree_control", "cpu memory\n");
        let group = fake.detect().unwrap().create("dropped", 128).unwrap();
        let dir = group.dirs()[0].clone();
        empty(&group);
        drop(group);
        assert!(!dir.exists());
    }

    #[test]
    fn a_process_that_is_not_in_the_group_after_joining_is_an_error() {
        let fake = Fake::new(
            "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/\n",
        );
        fake.file("/sys/fs/cgroup/cgroup.controllers", "cpu memory\n");
        fake.file("/sys/fs/cgroup/cgroup.subtree_control", "cpu memory\n");
        let group = fake.detect().unwrap().create("j", 128).unwrap();
        // What the kernel shows when the process exits before it is moved: the write is
        // taken, and the group stays empty.
        std::os::unix::fs::symlink("/dev/null", group.dirs()[0].join("cgroup.procs")).unwrap();
        let err = group.join(5).unwrap_err();
        assert!(
            matches!(err, CgroupError::NotJoined { pid: 5, .. }),
            "{err}"
        );
        assert_eq!(group.pids().unwrap(), Vec::<u32>::new());
        empty(&group);
    }

    #[test]
    fn reasons_not_to_use_cgroups() {
        let fake = Fake::new(V1_MOUNTINFO, V1_OWN);
        assert!(matches!(
            Cgroups::detect(fake.root.path(), 1000, 1),
            Err(Unusable::NotRoot { euid: 1000 })
        ));
        assert_eq!(
            Cgroups::detect(fake.root.path(), 1000, 1)
                .unwrap_err()
                .to_string(),
            "not running as root (effective uid 1000): only root can make cgroups here"
        );

        let nothing = Fake::new("50 20 8:1 / / rw - ext4 /dev/sda1 rw\n", "");
        let err = nothing.detect().unwrap_err();
        assert!(matches!(err, Unusable::NothingMounted { .. }), "{err}");

        let no_cpu = Fake::new(
            "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n",
            "2:memory:/\n",
        );
        assert_eq!(
            no_cpu.detect().unwrap_err().to_string(),
            "cgroup v1 has no cpu controller mounted (its hierarchies: memory; name=systemd)"
        );

        let no_memory = Fake::new(
            "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n",
            "1:cpu:/\n",
        );
        assert!(matches!(
            no_memory.detect(),
            Err(Unusable::V1Missing {
                controller: "memory",
                ..
            })
        ));

        let read_only = Fake::new(
            "32 31 0:29 / /sys/fs/cgroup/cpu ro - cgroup cgroup rw,cpu\n\
             35 31 0:32 / /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n",
            "1:cpu:/\n2:memory:/\n",
        );
        assert!(matches!(read_only.detect(), Err(Unusable::ReadOnly { .. })));

        let v2_no_memory = Fake::new(
            "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/\n",
        );
        v2_no_memory.file("/sys/fs/cgroup/cgroup.controllers", "cpu pids\n");
        let err = v2_no_memory.detect().unwrap_err();
        assert!(
            matches!(
                err,
                Unusable::V2Missing {
                    controller: "memory",
                    ..
                }
            ),
            "{err}"
        );

        let missing_files = Fake::new(
            "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/\n",
        );
        let err = missing_files.detect().unwrap_err();
        assert!(matches!(err, Unusable::Read { .. }), "{err}");
    }

    #[test]
    fn a_v2_group_that_cannot_hand_controllers_down_is_a_reason() {
        let fake = Fake::new(
            "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/job\n",
        );
        fake.file("/sys/fs/cgroup/job/cgroup.controllers", "cpu io memory\n");
        // A group that holds processes refuses to hand controllers down (EBUSY). A file that
        // reads but refuses writes, even from root, stands in for it.
        std::os::unix::fs::symlink(
            "/proc/version",
            fake.path("/sys/fs/cgroup/job/cgroup.subtree_control"),
        )
        .unwrap();
        let err = fake.detect().unwrap_err();
        assert!(
            matches!(&err, Unusable::V2NotDelegated { controllers, .. } if controllers == "cpu and memory"),
            "{err}"
        );
        let text = deployer::errors::chain(&err);
        assert!(
            text.starts_with(
                "cgroup v2 does not hand the cpu and memory controller(s) to the children of "
            ),
            "{text}"
        );
    }

    #[test]
    fn the_trial_names_what_failed() {
        let fake = Fake::new(V1_MOUNTINFO, V1_OWN);
        // The parents do not exist: the trial group cannot be made.
        let cgroups = fake.detect().unwrap();
        let err = cgroups.try_out().unwrap_err();
        let text = deployer::errors::chain(&err);
        assert!(
            text.starts_with("a trial group could not be set up: failed to create the cgroup "),
            "{text}"
        );
        assert!(text.contains("usersync-bench-4242-trial"), "{text}");
    }
}
