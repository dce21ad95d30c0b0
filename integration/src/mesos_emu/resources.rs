//! Resource arithmetic of the emulated allocator. Scalars are kept in thousandths (Mesos keeps three
//! decimal digits), ranges as sets of values, so containment and subtraction are exact.

use std::collections::{BTreeMap, BTreeSet};

use tether_mesos::model::{Resource, ValueType};

/// Largest range we expand into a set; anything larger cannot be on an emulated agent anyway.
const MAX_RANGE_SPAN: u64 = 1 << 16;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Res {
    pub scalars: BTreeMap<String, i64>,
    pub ranges: BTreeMap<String, BTreeSet<u64>>,
}

fn milli(v: f64) -> i64 {
    (v * 1000.0).round() as i64
}

impl Res {
    pub fn scalar(mut self, name: &str, v: f64) -> Self {
        self.scalars.insert(name.to_string(), milli(v));
        self
    }

    pub fn range(mut self, name: &str, begin: u64, end: u64) -> Self {
        self.ranges
            .entry(name.to_string())
            .or_default()
            .extend(begin..=end.min(begin + MAX_RANGE_SPAN));
        self
    }

    /// Parses and validates resources as the master does (`Resources::validate`), with the message the
    /// master would put into TASK_ERROR.
    pub fn from_resources(list: &[Resource]) -> Result<Res, String> {
        let mut out = Res::default();
        for r in list {
            match r.value_type {
                ValueType::Scalar => {
                    let Some(s) = r.scalar else {
                        return Err(format!("Invalid resource {}: scalar missing", r.name));
                    };
                    if !s.value.is_finite() || s.value < 0.0 {
                        return Err(format!(
                            "Invalid scalar resource {}: negative or not finite",
                            r.name
                        ));
                    }
                    let m = milli(s.value);
                    if m == 0 && s.value != 0.0 {
                        return Err(format!(
                            "Invalid scalar resource {}: rounds to zero",
                            r.name
                        ));
                    }
                    *out.scalars.entry(r.name.clone()).or_default() += m;
                }
                ValueType::Ranges => {
                    let Some(rs) = &r.ranges else {
                        return Err(format!("Invalid resource {}: ranges missing", r.name));
                    };
                    let set = out.ranges.entry(r.name.clone()).or_default();
                    for range in &rs.range {
                        if range.begin > range.end {
                            return Err(format!("Invalid ranges resource {}: begin > end", r.name));
                        }
                        if range.end - range.begin > MAX_RANGE_SPAN {
                            return Err(format!(
                                "Invalid ranges resource {}: range too large",
                                r.name
                            ));
                        }
                        for v in range.begin..=range.end {
                            if !set.insert(v) {
                                return Err(format!(
                                    "Invalid ranges resource {}: overlapping ranges",
                                    r.name
                                ));
                            }
                        }
                    }
                }
                ValueType::Set => {
                    return Err(format!(
                        "Resource {} of type SET is not available on this agent",
                        r.name
                    ));
                }
                ValueType::Text => {
                    return Err(format!("Unsupported resource type TEXT for {}", r.name));
                }
            }
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.scalars.values().all(|v| *v == 0) && self.ranges.values().all(BTreeSet::is_empty)
    }

    pub fn contains(&self, other: &Res) -> bool {
        other
            .scalars
            .iter()
            .all(|(k, v)| *v <= self.scalars.get(k).copied().unwrap_or(0))
            && other.ranges.iter().all(|(k, s)| {
                s.is_empty() || self.ranges.get(k).is_some_and(|mine| s.is_subset(mine))
            })
    }

    /// `self - other`; the caller checked containment.
    pub fn sub(&mut self, other: &Res) {
        for (k, v) in &other.scalars {
            *self.scalars.entry(k.clone()).or_default() -= v;
        }
        for (k, s) in &other.ranges {
            if let Some(mine) = self.ranges.get_mut(k) {
                for v in s {
                    mine.remove(v);
                }
            }
        }
    }

    pub fn add(&mut self, other: &Res) {
        for (k, v) in &other.scalars {
            *self.scalars.entry(k.clone()).or_default() += v;
        }
        for (k, s) in &other.ranges {
            self.ranges
                .entry(k.clone())
                .or_default()
                .extend(s.iter().copied());
        }
    }

    /// As `mesos.v1.Resource`s, unreserved (`role: "*"`), optionally allocated to `role`.
    pub fn to_resources(&self, allocation_role: Option<&str>) -> Vec<Resource> {
        let mut out = Vec::new();
        for (k, v) in &self.scalars {
            if *v > 0 {
                out.push(Resource::scalar(k.clone(), *v as f64 / 1000.0));
            }
        }
        for (k, s) in &self.ranges {
            if s.is_empty() {
                continue;
            }
            let mut ranges = Vec::new();
            let mut it = s.iter().copied();
            if let Some(first) = it.next() {
                let (mut b, mut e) = (first, first);
                for v in it {
                    if v == e + 1 {
                        e = v;
                    } else {
                        ranges.push((b, e));
                        b = v;
                        e = v;
                    }
                }
                ranges.push((b, e));
            }
            out.push(Resource::ranges(k.clone(), ranges));
        }
        for r in &mut out {
            r.role = Some("*".into());
            if let Some(role) = allocation_role {
                r.allocation_info = Some(tether_mesos::model::AllocationInfo {
                    role: Some(role.to_string()),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_round_trips() {
        let total = Res::default()
            .scalar("cpus", 4.0)
            .scalar("mem", 1024.0)
            .range("ports", 31000, 31010);
        let task = Res::from_resources(&[
            Resource::scalar("cpus", 1.5),
            Resource::ranges("ports", vec![(31002, 31003)]),
        ])
        .unwrap();
        assert!(total.contains(&task));
        let mut free = total.clone();
        free.sub(&task);
        let back = Res::from_resources(&free.to_resources(None)).unwrap();
        assert_eq!(back, free);
        assert_eq!(
            free.to_resources(None)[2]
                .ranges
                .as_ref()
                .unwrap()
                .range
                .len(),
            2
        );
        free.add(&task);
        assert_eq!(free, total);
        assert!(!total.contains(&Res::default().scalar("gpus", 1.0)));
    }

    #[test]
    fn invalid_resources_are_rejected() {
        assert!(Res::from_resources(&[Resource::scalar("cpus", -1.0)]).is_err());
        assert!(Res::from_resources(&[Resource::scalar("cpus", 0.0001)]).is_err());
        assert!(Res::from_resources(&[Resource::ranges("ports", vec![(5, 4)])]).is_err());
        assert!(Res::from_resources(&[Resource::ranges("ports", vec![(1, 5), (5, 6)])]).is_err());
        assert!(Res::from_resources(&[Resource::ranges("ports", vec![(0, u64::MAX)])]).is_err());
    }
}
