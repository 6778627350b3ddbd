//! Resources: cpus, memory, disk, GPUs and ports.
//!
//! Scalars are fixed-point with three decimals, as Mesos does, so that
//! offering and subtracting `0.1` cpus a thousand times never drifts, and
//! "does this task fit this offer" is exact.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why resources are not valid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResourceError {
    #[error("{name} must be a finite number between 0 and {max}, got {value}")]
    OutOfRange {
        name: &'static str,
        value: f64,
        max: f64,
    },
    #[error("port range {begin}-{end} is empty or reversed")]
    BadRange { begin: u32, end: u32 },
    #[error("cannot parse resources {input:?}: {why}")]
    Parse { input: String, why: String },
}

/// The largest scalar accepted (1e12 MB is far beyond any machine).
const MAX_SCALAR: f64 = 1e12;

/// A non-negative quantity with three decimals (thousandths).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scalar(u64);

impl Scalar {
    pub const ZERO: Scalar = Scalar(0);

    /// Rounds `v` to thousandths; refuses negative, infinite and huge values.
    pub fn from_f64(name: &'static str, v: f64) -> Result<Scalar, ResourceError> {
        if !v.is_finite() || !(0.0..=MAX_SCALAR).contains(&v) {
            return Err(ResourceError::OutOfRange {
                name,
                value: v,
                max: MAX_SCALAR,
            });
        }
        Ok(Scalar((v * 1000.0).round() as u64))
    }

    /// A whole number of units.
    pub const fn whole(units: u64) -> Scalar {
        Scalar(units * 1000)
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn checked_sub(self, other: Scalar) -> Option<Scalar> {
        self.0.checked_sub(other.0).map(Scalar)
    }

    pub fn saturating_sub(self, other: Scalar) -> Scalar {
        Scalar(self.0.saturating_sub(other.0))
    }

    pub fn saturating_add(self, other: Scalar) -> Scalar {
        Scalar(self.0.saturating_add(other.0))
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_f64())
    }
}

impl fmt::Debug for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_f64())
    }
}

impl Serialize for Scalar {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_f64())
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        Scalar::from_f64("resource", v).map_err(serde::de::Error::custom)
    }
}

/// An inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    pub begin: u16,
    pub end: u16,
}

impl PortRange {
    fn len(self) -> u32 {
        u32::from(self.end) - u32::from(self.begin) + 1
    }
}

/// A set of ports, kept as sorted, disjoint, non-adjacent ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PortSet(Vec<PortRange>);

impl PortSet {
    /// Builds a set from ranges in any order; refuses reversed ranges.
    pub fn from_ranges(ranges: impl IntoIterator<Item = PortRange>) -> Result<Self, ResourceError> {
        let mut v: Vec<PortRange> = Vec::new();
        for r in ranges {
            if r.begin > r.end {
                return Err(ResourceError::BadRange {
                    begin: r.begin.into(),
                    end: r.end.into(),
                });
            }
            v.push(r);
        }
        v.sort();
        let mut out: Vec<PortRange> = Vec::with_capacity(v.len());
        for r in v {
            match out.last_mut() {
                Some(last) if u32::from(r.begin) <= u32::from(last.end) + 1 => {
                    last.end = last.end.max(r.end);
                }
                _ => out.push(r),
            }
        }
        Ok(PortSet(out))
    }

    pub fn ranges(&self) -> &[PortRange] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many ports the set holds.
    pub fn count(&self) -> u32 {
        self.0.iter().map(|r| r.len()).sum()
    }

    /// Every port, in order.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().flat_map(|r| r.begin..=r.end)
    }

    pub fn contains_port(&self, p: u16) -> bool {
        self.0.iter().any(|r| r.begin <= p && p <= r.end)
    }

    pub fn contains(&self, other: &PortSet) -> bool {
        other
            .0
            .iter()
            .all(|o| self.0.iter().any(|r| r.begin <= o.begin && o.end <= r.end))
    }

    pub fn union(&self, other: &PortSet) -> PortSet {
        // Both inputs are valid, so merging cannot fail.
        PortSet::from_ranges(self.0.iter().chain(other.0.iter()).copied()).unwrap_or_default()
    }

    /// The ports of `self` not in `other`.
    pub fn difference(&self, other: &PortSet) -> PortSet {
        let mut out = Vec::new();
        for r in &self.0 {
            let mut pieces = vec![(u32::from(r.begin), u32::from(r.end))];
            for o in &other.0 {
                let (ob, oe) = (u32::from(o.begin), u32::from(o.end));
                pieces = pieces
                    .into_iter()
                    .flat_map(|(b, e)| {
                        let mut keep = Vec::with_capacity(2);
                        if oe < b || ob > e {
                            keep.push((b, e));
                        } else {
                            if ob > b {
                                keep.push((b, ob - 1));
                            }
                            if oe < e {
                                keep.push((oe + 1, e));
                            }
                        }
                        keep
                    })
                    .collect();
            }
            out.extend(pieces.into_iter().map(|(b, e)| PortRange {
                begin: b as u16,
                end: e as u16,
            }));
        }
        PortSet(out)
    }

    /// The first `n` ports of the set, if it holds that many.
    pub fn take(&self, n: u32) -> Option<PortSet> {
        if self.count() < n {
            return None;
        }
        let ports = self
            .ports()
            .take(n as usize)
            .map(|p| PortRange { begin: p, end: p });
        PortSet::from_ranges(ports).ok()
    }
}

impl Serialize for PortSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for PortSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<PortRange>::deserialize(d)?;
        PortSet::from_ranges(v).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}-{}", r.begin, r.end)?;
        }
        f.write_str("]")
    }
}

impl FromStr for PortSet {
    type Err = ResourceError;

    /// Parses `[31000-32000, 33000-33010]`, `31000-32000,8080` or `8080`.
    fn from_str(input: &str) -> Result<Self, ResourceError> {
        let err = |why: &str| ResourceError::Parse {
            input: input.to_string(),
            why: why.to_string(),
        };
        let inner = input.trim().trim_start_matches('[').trim_end_matches(']');
        let mut ranges = Vec::new();
        for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (b, e) = part.split_once('-').unwrap_or((part, part));
            let b: u16 = b.trim().parse().map_err(|_| err("a port is 0-65535"))?;
            let e: u16 = e.trim().parse().map_err(|_| err("a port is 0-65535"))?;
            ranges.push(PortRange { begin: b, end: e });
        }
        PortSet::from_ranges(ranges)
    }
}

/// A bundle of resources.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Resources {
    pub cpus: Scalar,
    /// Megabytes.
    pub mem: Scalar,
    /// Megabytes.
    pub disk: Scalar,
    pub gpus: u32,
    pub ports: PortSet,
}

impl Resources {
    /// Cpus and memory, the common case.
    pub fn cpus_mem(cpus: f64, mem: f64) -> Result<Resources, ResourceError> {
        Ok(Resources {
            cpus: Scalar::from_f64("cpus", cpus)?,
            mem: Scalar::from_f64("mem", mem)?,
            ..Resources::default()
        })
    }

    pub fn is_empty(&self) -> bool {
        self.cpus.is_zero()
            && self.mem.is_zero()
            && self.disk.is_zero()
            && self.gpus == 0
            && self.ports.is_empty()
    }

    /// Whether `other` fits in `self`.
    pub fn contains(&self, other: &Resources) -> bool {
        self.cpus >= other.cpus
            && self.mem >= other.mem
            && self.disk >= other.disk
            && self.gpus >= other.gpus
            && self.ports.contains(&other.ports)
    }

    /// `self - other`, or None when `other` does not fit.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        if !self.contains(other) {
            return None;
        }
        Some(self.saturating_sub(other))
    }

    /// `self - other`, clamping every quantity at zero.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpus: self.cpus.saturating_sub(other.cpus),
            mem: self.mem.saturating_sub(other.mem),
            disk: self.disk.saturating_sub(other.disk),
            gpus: self.gpus.saturating_sub(other.gpus),
            ports: self.ports.difference(&other.ports),
        }
    }

    pub fn add(&self, other: &Resources) -> Resources {
        Resources {
            cpus: self.cpus.saturating_add(other.cpus),
            mem: self.mem.saturating_add(other.mem),
            disk: self.disk.saturating_add(other.disk),
            gpus: self.gpus.saturating_add(other.gpus),
            ports: self.ports.union(&other.ports),
        }
    }

    /// The largest share of `total` this bundle takes, over cpus, mem, disk
    /// and gpus: the "dominant share" of dominant resource fairness.
    pub fn dominant_share(&self, total: &Resources) -> f64 {
        let share = |a: f64, t: f64| if t > 0.0 { a / t } else { 0.0 };
        [
            share(self.cpus.as_f64(), total.cpus.as_f64()),
            share(self.mem.as_f64(), total.mem.as_f64()),
            share(self.disk.as_f64(), total.disk.as_f64()),
            share(f64::from(self.gpus), f64::from(total.gpus)),
        ]
        .into_iter()
        .fold(0.0, f64::max)
    }
}

impl fmt::Display for Resources {
    /// Mesos' text form: `cpus:2;mem:1024;disk:4096;ports:[31000-32000]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpus:{};mem:{};disk:{}", self.cpus, self.mem, self.disk)?;
        if self.gpus > 0 {
            write!(f, ";gpus:{}", self.gpus)?;
        }
        if !self.ports.is_empty() {
            write!(f, ";ports:{}", self.ports)?;
        }
        Ok(())
    }
}

impl FromStr for Resources {
    type Err = ResourceError;

    /// Parses Mesos' text form; names not given are zero.
    fn from_str(input: &str) -> Result<Self, ResourceError> {
        let err = |why: String| ResourceError::Parse {
            input: input.to_string(),
            why,
        };
        let mut r = Resources::default();
        for part in input.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once(':')
                .ok_or_else(|| err(format!("`{part}` is not name:value")))?;
            let scalar = |n: &'static str| -> Result<Scalar, ResourceError> {
                let v: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| err(format!("{n} must be a number")))?;
                Scalar::from_f64(n, v)
            };
            match name.trim() {
                "cpus" => r.cpus = scalar("cpus")?,
                "mem" => r.mem = scalar("mem")?,
                "disk" => r.disk = scalar("disk")?,
                "gpus" => {
                    r.gpus = value
                        .trim()
                        .parse()
                        .map_err(|_| err("gpus must be a whole number".into()))?
                }
                "ports" => r.ports = value.parse()?,
                other => {
                    return Err(err(format!(
                        "unknown resource `{other}` (known: cpus, mem, disk, gpus, ports)"
                    )));
                }
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(s: &str) -> PortSet {
        s.parse().unwrap()
    }

    #[test]
    fn scalars_do_not_drift_when_subtracted_many_times() {
        let mut total = Scalar::from_f64("cpus", 100.0).unwrap();
        let tenth = Scalar::from_f64("cpus", 0.1).unwrap();
        for _ in 0..1000 {
            total = total.checked_sub(tenth).unwrap();
        }
        assert!(total.is_zero());
    }

    #[test]
    fn negative_nan_and_huge_scalars_are_refused() {
        for v in [-1.0, f64::NAN, f64::INFINITY, 1e13] {
            assert!(Scalar::from_f64("mem", v).is_err(), "{v}");
        }
        assert!(serde_json::from_str::<Resources>(r#"{"cpus":-0.5}"#).is_err());
    }

    #[test]
    fn unknown_resource_names_are_refused() {
        let err = serde_json::from_str::<Resources>(r#"{"cpus":1,"fpgas":2}"#).unwrap_err();
        assert!(err.to_string().contains("fpgas"), "{err}");
        assert!("cpus:1;fpgas:2".parse::<Resources>().is_err());
    }

    #[test]
    fn port_sets_merge_and_subtract() {
        let a = ports("[31000-31010, 31005-31020, 31021-31021]");
        assert_eq!(a.to_string(), "[31000-31021]");
        let b = ports("31005-31006,31021");
        assert_eq!(a.difference(&b).to_string(), "[31000-31004, 31007-31020]");
        assert!(a.contains(&b));
        assert!(!b.contains(&a));
        assert_eq!(a.take(2).unwrap().to_string(), "[31000-31001]");
        assert!(b.take(4).is_none());
        assert_eq!(a.count(), 22);
        assert!("[5-4]".parse::<PortSet>().is_err());
    }

    #[test]
    fn resources_fit_and_subtract_exactly() {
        let agent: Resources = "cpus:2;mem:1024;disk:100;ports:[31000-31009]"
            .parse()
            .unwrap();
        let task: Resources = "cpus:0.5;mem:1024;ports:[31000-31000]".parse().unwrap();
        let left = agent.checked_sub(&task).unwrap();
        assert_eq!(
            left.to_string(),
            "cpus:1.5;mem:0;disk:100;ports:[31001-31009]"
        );
        assert!(left.checked_sub(&task).is_none(), "memory is used up");
        assert_eq!(left.add(&task), agent);
    }

    #[test]
    fn dominant_share_is_the_largest_share() {
        let total: Resources = "cpus:10;mem:1000".parse().unwrap();
        let used: Resources = "cpus:1;mem:500".parse().unwrap();
        assert!((used.dominant_share(&total) - 0.5).abs() < 1e-9);
        assert_eq!(
            Resources::default().dominant_share(&Resources::default()),
            0.0
        );
    }
}
