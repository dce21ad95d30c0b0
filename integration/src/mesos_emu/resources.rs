//! Resource arithmetic of the emulated allocator. Scalars are kept in thousandths (Mesos keeps three
//! decimal digits), ranges as sets of values, so containment and subtraction are exact. Each amount is
//! keyed by its name and its reservation stack in the post-refinement form the master works in
//! (`convertResourceFormat`), so reserved and unreserved resources never add up, as in
//! `Resources::contains`: a task asking for reserved cpus without naming the reservation asks for
//! unreserved cpus.

use std::collections::{BTreeMap, BTreeSet};

use tether_mesos::model::{Label, Labels, ReservationInfo, ReservationType, Resource, ValueType};

/// Largest range we expand into a set; anything larger cannot be on an emulated agent anyway.
const MAX_RANGE_SPAN: u64 = 1 << 16;

/// One reservation, compared as `operator==(ReservationInfo)` does: type, role, principal, labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Reservation {
    pub dynamic: bool,
    pub role: String,
    pub principal: Option<String>,
    pub labels: Option<Vec<(String, Option<String>)>>,
}

/// A resource's name and reservation stack (empty: unreserved).
pub(crate) type Key = (String, Vec<Reservation>);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Res {
    pub scalars: BTreeMap<Key, i64>,
    pub ranges: BTreeMap<Key, BTreeSet<u64>>,
}

fn milli(v: f64) -> i64 {
    (v * 1000.0).round() as i64
}

fn unreserved(name: &str) -> Key {
    (name.to_string(), Vec::new())
}

/// `roles::validate`, reduced to what a test can get wrong: a role is not empty and is no `.`/`..`.
fn valid_role(role: &str) -> Result<(), String> {
    if role.is_empty()
        || role == "."
        || role == ".."
        || role.starts_with('/')
        || role.ends_with('/')
    {
        return Err(format!("Invalid role '{role}'"));
    }
    Ok(())
}

fn labels(l: &Option<Labels>) -> Option<Vec<(String, Option<String>)>> {
    l.as_ref().map(|l| {
        l.labels
            .iter()
            .map(|x| (x.key.clone(), x.value.clone()))
            .collect()
    })
}

/// The reservation stack of `r` after `Resources::validate`'s format checks and the master's upgrade to
/// the post-refinement form (`role` without `reservation`: STATIC; with it: DYNAMIC).
fn reservation_stack(r: &Resource) -> Result<Vec<Reservation>, String> {
    if r.reservations.is_empty() {
        let role = r.role.as_deref().unwrap_or("*");
        if role != "*" {
            valid_role(role)?;
        }
        let Some(res) = &r.reservation else {
            return Ok(if role == "*" {
                Vec::new()
            } else {
                vec![Reservation {
                    dynamic: false,
                    role: role.to_string(),
                    principal: None,
                    labels: None,
                }]
            });
        };
        if res.reservation_type.is_some() {
            return Err("'Resource.ReservationInfo.type' must not be set for the 'Resource.reservation' field".into());
        }
        if res.role.is_some() {
            return Err("'Resource.ReservationInfo.role' must not be set for the 'Resource.reservation' field".into());
        }
        if role == "*" {
            return Err("Invalid reservation: role \"*\" cannot be dynamically reserved".into());
        }
        return Ok(vec![Reservation {
            dynamic: true,
            role: role.to_string(),
            principal: res.principal.clone(),
            labels: labels(&res.labels),
        }]);
    }
    let mut out: Vec<Reservation> = Vec::new();
    for (i, x) in r.reservations.iter().enumerate() {
        let dynamic = match x.reservation_type {
            Some(ReservationType::Static) => false,
            Some(ReservationType::Dynamic) => true,
            _ => {
                return Err(
                    "Invalid reservation: 'Resource.ReservationInfo.type' field must be set."
                        .into(),
                );
            }
        };
        let Some(role) = x.role.clone() else {
            return Err(
                "Invalid reservation: 'Resource.ReservationInfo.role' field must be set.".into(),
            );
        };
        valid_role(&role)?;
        if role == "*" {
            return Err("Invalid reservation: role \"*\" cannot be reserved".into());
        }
        if let Some(ancestor) = out.last() {
            if !dynamic {
                return Err(
                    "Invalid refined reservation: A refined reservation cannot be STATIC".into(),
                );
            }
            if !role.starts_with(&format!("{}/", ancestor.role)) {
                return Err(format!(
                    "Invalid refined reservation: role '{role}' is not a refinement of '{}'",
                    ancestor.role
                ));
            }
        }
        if i == 0 && r.reservations.len() == 1 {
            if let Some(legacy) = &r.role
                && *legacy != role
            {
                return Err(format!(
                    "Invalid resource format: 'Resource.role' field with '{legacy}' does not match the role '{role}' in 'Resource.reservations'"
                ));
            }
            if !dynamic && r.reservation.is_some() {
                return Err("Invalid resource format: 'Resource.reservation' must not be set if the single reservation in 'Resource.reservations' is STATIC".into());
            }
        }
        out.push(Reservation {
            dynamic,
            role,
            principal: x.principal.clone(),
            labels: labels(&x.labels),
        });
    }
    Ok(out)
}

/// `r`'s reservation as the JSON fields of a resource: the pre-refinement form (`role`, `reservation`)
/// for a framework without RESERVATION_REFINEMENT (`downgradeResources`), else `reservations`.
fn set_reservation(r: &mut Resource, stack: &[Reservation], refinement: bool) {
    let info = |x: &Reservation, full: bool| ReservationInfo {
        reservation_type: full.then_some(if x.dynamic {
            ReservationType::Dynamic
        } else {
            ReservationType::Static
        }),
        role: full.then(|| x.role.clone()),
        principal: x.principal.clone(),
        labels: x.labels.as_ref().map(|l| Labels {
            labels: l
                .iter()
                .map(|(key, value)| Label {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        }),
    };
    match stack {
        [] => r.role = (!refinement).then(|| "*".into()),
        [one] if !refinement => {
            r.role = Some(one.role.clone());
            r.reservation = one.dynamic.then(|| info(one, false));
        }
        stack => r.reservations = stack.iter().map(|x| info(x, true)).collect(),
    }
}

impl Res {
    pub fn scalar(mut self, name: &str, v: f64) -> Self {
        self.scalars.insert(unreserved(name), milli(v));
        self
    }

    pub fn range(mut self, name: &str, begin: u64, end: u64) -> Self {
        self.ranges
            .entry(unreserved(name))
            .or_default()
            .extend(begin..=end.min(begin + MAX_RANGE_SPAN));
        self
    }

    /// What can be offered to `role`: the unreserved resources and those reserved for it (the first
    /// reservation of the stack is the role's or an ancestor's; the emulator has no role hierarchy, so
    /// only the role itself); and the rest, which stays on the agent. A framework without
    /// RESERVATION_REFINEMENT is not offered refined reservations.
    pub fn split_for(&self, role: &str, refinement: bool) -> (Res, Res) {
        let offerable = |k: &Key| match k.1.as_slice() {
            [] => true,
            [one] => one.role == role,
            stack => refinement && stack.last().is_some_and(|x| x.role == role),
        };
        let mut yes = Res::default();
        let mut no = Res::default();
        for (k, v) in &self.scalars {
            let to = if offerable(k) { &mut yes } else { &mut no };
            to.scalars.insert(k.clone(), *v);
        }
        for (k, s) in &self.ranges {
            let to = if offerable(k) { &mut yes } else { &mut no };
            to.ranges.insert(k.clone(), s.clone());
        }
        (yes, no)
    }

    /// Parses and validates resources as the master does (`Resources::validate`), with the message the
    /// master would put into TASK_ERROR.
    pub fn from_resources(list: &[Resource]) -> Result<Res, String> {
        let mut out = Res::default();
        for r in list {
            let key = (
                r.name.clone(),
                reservation_stack(r).map_err(|e| format!("Invalid resource {}: {e}", r.name))?,
            );
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
                    *out.scalars.entry(key).or_default() += m;
                }
                ValueType::Ranges => {
                    let Some(rs) = &r.ranges else {
                        return Err(format!("Invalid resource {}: ranges missing", r.name));
                    };
                    let set = out.ranges.entry(key).or_default();
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

    /// As `mesos.v1.Resource`s, each with its reservation in the form the framework reads
    /// (`refinement`: it has RESERVATION_REFINEMENT), optionally allocated to `role`.
    pub fn to_resources(&self, allocation_role: Option<&str>, refinement: bool) -> Vec<Resource> {
        let mut out = Vec::new();
        for (k, v) in &self.scalars {
            if *v > 0 {
                let mut r = Resource::scalar(k.0.clone(), *v as f64 / 1000.0);
                set_reservation(&mut r, &k.1, refinement);
                out.push(r);
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
            let mut r = Resource::ranges(k.0.clone(), ranges);
            set_reservation(&mut r, &k.1, refinement);
            out.push(r);
        }
        if let Some(role) = allocation_role {
            for r in &mut out {
                r.allocation_info = Some(tether_mesos::model::AllocationInfo {
                    role: Some(role.to_string()),
                });
            }
        }
        out
    }
}

/// Like Mesos' `stringify(Resources)`: `cpus(reservations: [(DYNAMIC,es,ops)]):0.5; cpus:1; ports:[31000-31001]`.
impl std::fmt::Display for Res {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = |k: &Key| {
            if k.1.is_empty() {
                return k.0.clone();
            }
            let stack: Vec<String> =
                k.1.iter()
                    .map(|x| {
                        let kind = if x.dynamic { "DYNAMIC" } else { "STATIC" };
                        match &x.principal {
                            Some(p) => format!("({kind},{},{p})", x.role),
                            None => format!("({kind},{})", x.role),
                        }
                    })
                    .collect();
            format!("{}(reservations: [{}])", k.0, stack.join(","))
        };
        let mut parts: Vec<String> = self
            .scalars
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(k, v)| format!("{}:{}", name(k), *v as f64 / 1000.0))
            .collect();
        for (k, set) in self.ranges.iter().filter(|(_, s)| !s.is_empty()) {
            let (lo, hi) = (
                set.first().copied().unwrap_or(0),
                set.last().copied().unwrap_or(0),
            );
            parts.push(format!("{}:[{lo}-{hi}] ({} values)", name(k), set.len()));
        }
        f.write_str(&parts.join("; "))
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
        let back = Res::from_resources(&free.to_resources(None, false)).unwrap();
        assert_eq!(back, free);
        assert_eq!(
            free.to_resources(None, false)[2]
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

    fn reserved(mut r: Resource, role: &str, principal: Option<&str>) -> Resource {
        r.role = Some(role.into());
        r.reservation = principal.map(|p| ReservationInfo {
            principal: Some(p.into()),
            ..ReservationInfo::default()
        });
        r
    }

    /// Reserved and unreserved amounts of one name never add up, and a STATIC reservation is not the
    /// DYNAMIC one of the same role; both forms of one reservation are the same resource.
    #[test]
    fn reservations_are_part_of_what_a_resource_is() {
        let offered = Res::from_resources(&[
            Resource::scalar("cpus", 1.0),
            reserved(Resource::scalar("cpus", 2.0), "es", Some("ops")),
        ])
        .unwrap();
        let want = |list: &[Resource]| Res::from_resources(list).unwrap();
        assert!(!offered.contains(&want(&[Resource::scalar("cpus", 1.5)])));
        assert!(!offered.contains(&want(&[reserved(
            Resource::scalar("cpus", 1.0),
            "es",
            None
        )])));
        assert!(!offered.contains(&want(&[reserved(
            Resource::scalar("cpus", 1.0),
            "es",
            Some("x")
        )])));
        let mut post = Resource::scalar("cpus", 2.0);
        post.reservations = vec![ReservationInfo {
            reservation_type: Some(ReservationType::Dynamic),
            role: Some("es".into()),
            principal: Some("ops".into()),
            labels: None,
        }];
        assert!(offered.contains(&want(&[post, Resource::scalar("cpus", 1.0)])));
    }

    /// Only unreserved resources and those reserved for the role are offered to it, in the
    /// pre-refinement form to a framework without RESERVATION_REFINEMENT.
    #[test]
    fn a_role_is_offered_its_reservations_only() {
        let free = Res::from_resources(&[
            Resource::scalar("cpus", 1.0),
            reserved(Resource::scalar("cpus", 2.0), "es", Some("ops")),
            reserved(Resource::scalar("mem", 64.0), "other", None),
        ])
        .unwrap();
        let (offered, rest) = free.split_for("es", false);
        let mut back = offered.clone();
        back.add(&rest);
        assert_eq!(back, free);
        let json = serde_json::to_value(offered.to_resources(None, false)).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.0}, "role": "*"},
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2.0}, "role": "es",
                 "reservation": {"principal": "ops"}},
            ])
        );
        let json = serde_json::to_value(offered.to_resources(None, true)).unwrap();
        assert_eq!(
            json[1]["reservations"],
            serde_json::json!([{"type": "DYNAMIC", "role": "es", "principal": "ops"}])
        );
        assert!(json[0].get("role").is_none());
    }

    /// `Resources::validate`'s reservation format checks.
    #[test]
    fn malformed_reservations_are_refused() {
        let mut typed = reserved(Resource::scalar("cpus", 1.0), "es", Some("p"));
        typed.reservation.as_mut().unwrap().reservation_type = Some(ReservationType::Dynamic);
        let star = reserved(Resource::scalar("cpus", 1.0), "*", Some("p"));
        let mut untyped = Resource::scalar("cpus", 1.0);
        untyped.reservations = vec![ReservationInfo {
            role: Some("es".into()),
            ..ReservationInfo::default()
        }];
        let mut mismatched = untyped.clone();
        mismatched.reservations[0].reservation_type = Some(ReservationType::Static);
        mismatched.role = Some("other".into());
        for bad in [typed, star, untyped, mismatched] {
            assert!(
                Res::from_resources(std::slice::from_ref(&bad)).is_err(),
                "{bad:?}"
            );
        }
    }
}
