//! What AWS offers: the ElastiCache node families and sizes, with each node's memory.
//!
//! Used to compare node types across families (is `cache.m6g.2xlarge` above a cap of
//! `cache.r6g.xlarge`?), to show sizes to people, and by the simulator to validate types and
//! list scale-ups the way AWS does. AWS itself stays the authority on what a given group may
//! move to (ListAllowedNodeTypeModifications); this table never widens that list.

use crate::domain::NodeType;

/// One node type AWS offers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeSpec {
    pub name: &'static str,
    /// Memory available to Redis, GiB (from AWS's ElastiCache pricing and node-type pages).
    pub memory_gib: f64,
    /// AWS keeps previous-generation families running but no longer offers them as targets.
    pub current_generation: bool,
    /// Data-tiering (`…gd`) families can only move within data-tiering families.
    pub data_tiering: bool,
}

const fn spec(name: &'static str, memory_gib: f64, current: bool, tiering: bool) -> NodeSpec {
    NodeSpec {
        name,
        memory_gib,
        current_generation: current,
        data_tiering: tiering,
    }
}

/// Every node type ElastiCache for Redis OSS offers or still runs.
pub const NODE_TYPES: &[NodeSpec] = &[
    // General purpose, current generation.
    spec("cache.m7g.large", 6.38, true, false),
    spec("cache.m7g.xlarge", 12.93, true, false),
    spec("cache.m7g.2xlarge", 26.04, true, false),
    spec("cache.m7g.4xlarge", 52.26, true, false),
    spec("cache.m7g.8xlarge", 103.68, true, false),
    spec("cache.m7g.12xlarge", 157.12, true, false),
    spec("cache.m7g.16xlarge", 209.55, true, false),
    spec("cache.m6g.large", 6.38, true, false),
    spec("cache.m6g.xlarge", 12.93, true, false),
    spec("cache.m6g.2xlarge", 26.04, true, false),
    spec("cache.m6g.4xlarge", 52.26, true, false),
    spec("cache.m6g.8xlarge", 103.68, true, false),
    spec("cache.m6g.12xlarge", 157.12, true, false),
    spec("cache.m6g.16xlarge", 209.55, true, false),
    spec("cache.m5.large", 6.38, true, false),
    spec("cache.m5.xlarge", 12.93, true, false),
    spec("cache.m5.2xlarge", 26.04, true, false),
    spec("cache.m5.4xlarge", 52.26, true, false),
    spec("cache.m5.12xlarge", 157.12, true, false),
    spec("cache.m5.24xlarge", 314.32, true, false),
    spec("cache.m4.large", 6.42, true, false),
    spec("cache.m4.xlarge", 14.28, true, false),
    spec("cache.m4.2xlarge", 29.70, true, false),
    spec("cache.m4.4xlarge", 60.78, true, false),
    spec("cache.m4.10xlarge", 154.64, true, false),
    spec("cache.t4g.micro", 0.5, true, false),
    spec("cache.t4g.small", 1.37, true, false),
    spec("cache.t4g.medium", 3.09, true, false),
    spec("cache.t3.micro", 0.5, true, false),
    spec("cache.t3.small", 1.37, true, false),
    spec("cache.t3.medium", 3.09, true, false),
    spec("cache.t2.micro", 0.555, true, false),
    spec("cache.t2.small", 1.55, true, false),
    spec("cache.t2.medium", 3.22, true, false),
    // Network optimized.
    spec("cache.c7gn.large", 3.09, true, false),
    spec("cache.c7gn.xlarge", 6.38, true, false),
    spec("cache.c7gn.2xlarge", 12.94, true, false),
    spec("cache.c7gn.4xlarge", 26.05, true, false),
    spec("cache.c7gn.8xlarge", 52.26, true, false),
    spec("cache.c7gn.12xlarge", 78.56, true, false),
    spec("cache.c7gn.16xlarge", 105.81, true, false),
    // Memory optimized, current generation.
    spec("cache.r7g.large", 13.07, true, false),
    spec("cache.r7g.xlarge", 26.32, true, false),
    spec("cache.r7g.2xlarge", 52.82, true, false),
    spec("cache.r7g.4xlarge", 105.81, true, false),
    spec("cache.r7g.8xlarge", 209.55, true, false),
    spec("cache.r7g.12xlarge", 317.77, true, false),
    spec("cache.r7g.16xlarge", 419.09, true, false),
    spec("cache.r6g.large", 13.07, true, false),
    spec("cache.r6g.xlarge", 26.32, true, false),
    spec("cache.r6g.2xlarge", 52.82, true, false),
    spec("cache.r6g.4xlarge", 105.81, true, false),
    spec("cache.r6g.8xlarge", 209.55, true, false),
    spec("cache.r6g.12xlarge", 317.77, true, false),
    spec("cache.r6g.16xlarge", 419.09, true, false),
    spec("cache.r5.large", 13.07, true, false),
    spec("cache.r5.xlarge", 26.32, true, false),
    spec("cache.r5.2xlarge", 52.82, true, false),
    spec("cache.r5.4xlarge", 105.81, true, false),
    spec("cache.r5.12xlarge", 317.77, true, false),
    spec("cache.r5.24xlarge", 635.61, true, false),
    spec("cache.r4.large", 12.3, true, false),
    spec("cache.r4.xlarge", 25.05, true, false),
    spec("cache.r4.2xlarge", 50.47, true, false),
    spec("cache.r4.4xlarge", 101.38, true, false),
    spec("cache.r4.8xlarge", 203.26, true, false),
    spec("cache.r4.16xlarge", 407.0, true, false),
    // Memory optimized with data tiering.
    spec("cache.r6gd.xlarge", 26.32, true, true),
    spec("cache.r6gd.2xlarge", 52.82, true, true),
    spec("cache.r6gd.4xlarge", 105.81, true, true),
    spec("cache.r6gd.8xlarge", 209.55, true, true),
    spec("cache.r6gd.12xlarge", 317.77, true, true),
    spec("cache.r6gd.16xlarge", 419.09, true, true),
    // Previous generation: still running in places, never offered as a target.
    spec("cache.t1.micro", 0.213, false, false),
    spec("cache.m1.small", 1.3, false, false),
    spec("cache.m1.medium", 3.35, false, false),
    spec("cache.m1.large", 7.1, false, false),
    spec("cache.m1.xlarge", 14.6, false, false),
    spec("cache.m2.xlarge", 16.7, false, false),
    spec("cache.m2.2xlarge", 33.8, false, false),
    spec("cache.m2.4xlarge", 68.0, false, false),
    spec("cache.m3.medium", 2.78, false, false),
    spec("cache.m3.large", 6.05, false, false),
    spec("cache.m3.xlarge", 13.3, false, false),
    spec("cache.m3.2xlarge", 27.9, false, false),
    spec("cache.c1.xlarge", 6.6, false, false),
    spec("cache.r3.large", 13.5, false, false),
    spec("cache.r3.xlarge", 28.4, false, false),
    spec("cache.r3.2xlarge", 58.2, false, false),
    spec("cache.r3.4xlarge", 118.0, false, false),
    spec("cache.r3.8xlarge", 237.0, false, false),
];

/// The spec of a node type AWS offers, or `None` for a type this table does not know.
pub fn lookup(t: &NodeType) -> Option<&'static NodeSpec> {
    let name = t.to_string();
    NODE_TYPES.iter().find(|s| s.name == name)
}

/// Is `candidate` at or below `cap`?
///
/// Within one family the size decides. Across families the memory decides, and a type this
/// table does not know is never assumed to be within a cap.
pub fn within_cap(candidate: &NodeType, cap: &NodeType) -> Result<bool, String> {
    if candidate.same_family(cap) {
        return Ok(candidate.size() <= cap.size());
    }
    match (lookup(candidate), lookup(cap)) {
        (Some(c), Some(m)) => Ok(c.memory_gib <= m.memory_gib),
        (None, _) => Err(format!(
            "{candidate} is in another family than the cap ({cap}) and its size is not known \
             here, so it can't be compared"
        )),
        (_, None) => Err(format!(
            "the cap {cap} is not a node type known here, so {candidate} can't be compared with it"
        )),
    }
}

/// The next size up within `current`'s family among `allowed`, if any.
pub fn next_in_family<'a>(current: &NodeType, allowed: &'a [NodeType]) -> Option<&'a NodeType> {
    allowed
        .iter()
        .filter(|t| t.same_family(current) && t.size() > current.size())
        .min_by_key(|t| t.size())
}

/// The next size down within `current`'s family among `allowed` (the largest smaller one), if
/// any: a scale-down suggestion moves one step, never more.
pub fn prev_in_family<'a>(current: &NodeType, allowed: &'a [NodeType]) -> Option<&'a NodeType> {
    allowed
        .iter()
        .filter(|t| t.same_family(current) && t.size() < current.size())
        .max_by_key(|t| t.size())
}

/// Memory for display: `26.3 GiB`, or `?` for a type this table does not know.
pub fn memory_label(t: &NodeType) -> String {
    match lookup(t) {
        Some(s) => format!("{:.1} GiB", s.memory_gib),
        None => "? GiB".to_string(),
    }
}

/// The sizes AWS lists as scale-ups from `current`: every current-generation type with more
/// memory (data-tiering only to data-tiering), in AWS's alphabetical order.
pub fn scale_ups_from(current: &NodeType) -> Vec<NodeType> {
    offered_from(current, |to, from| to > from)
}

/// The sizes AWS lists as scale-downs from `current`: every current-generation type with less
/// memory (data-tiering only to data-tiering), in AWS's alphabetical order. (AWS also leaves out
/// types the data would not fit in; the simulator does not check that.)
pub fn scale_downs_from(current: &NodeType) -> Vec<NodeType> {
    offered_from(current, |to, from| to < from)
}

/// The current-generation types whose memory `(theirs, current's)` passes `keep`, of
/// `current`'s tiering, in AWS's alphabetical order (none for a type this table doesn't know).
fn offered_from(current: &NodeType, keep: impl Fn(f64, f64) -> bool) -> Vec<NodeType> {
    let Some(from) = lookup(current) else {
        return Vec::new();
    };
    let mut out: Vec<&str> = NODE_TYPES
        .iter()
        .filter(|s| s.current_generation && keep(s.memory_gib, from.memory_gib))
        .filter(|s| s.data_tiering == from.data_tiering)
        .map(|s| s.name)
        .collect();
    out.sort_unstable();
    out.into_iter()
        .map(|n| NodeType::parse(n).expect("the table holds valid node types"))
        .collect()
}

/// Is `size` a size AWS uses at all? (Used to keep obviously wrong types out of the simulator.)
pub fn is_offered(t: &NodeType) -> bool {
    lookup(t).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nt(s: &str) -> NodeType {
        NodeType::parse(s).unwrap()
    }

    #[test]
    fn every_table_entry_parses_and_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for s in NODE_TYPES {
            let t = NodeType::parse(s.name).unwrap();
            assert_eq!(t.to_string(), s.name);
            assert!(seen.insert(s.name), "duplicate {}", s.name);
        }
    }

    #[test]
    fn memory_grows_with_size_within_each_family() {
        for a in NODE_TYPES {
            for b in NODE_TYPES {
                let (ta, tb) = (nt(a.name), nt(b.name));
                if ta.same_family(&tb) && ta.size() < tb.size() {
                    assert!(a.memory_gib < b.memory_gib, "{} vs {}", a.name, b.name);
                }
            }
        }
    }

    #[test]
    fn prev_in_family_is_one_step_down_in_the_same_family() {
        let allowed = scale_downs_from(&nt("cache.r6g.2xlarge"));
        assert!(
            allowed
                .iter()
                .all(|t| lookup(t).unwrap().memory_gib < 52.82)
        );
        assert!(
            allowed.contains(&nt("cache.m6g.large")),
            "other families listed too"
        );
        assert_eq!(
            prev_in_family(&nt("cache.r6g.2xlarge"), &allowed),
            Some(&nt("cache.r6g.xlarge"))
        );
        assert_eq!(prev_in_family(&nt("cache.r6g.large"), &allowed), None);
        assert!(
            scale_downs_from(&nt("cache.r6gd.xlarge"))
                .iter()
                .all(|t| t.family().ends_with('d'))
        );
    }

    #[test]
    fn next_in_family_skips_other_families_and_smaller_sizes() {
        let allowed = scale_ups_from(&nt("cache.r6g.large"));
        assert_eq!(
            next_in_family(&nt("cache.r6g.large"), &allowed),
            Some(&nt("cache.r6g.xlarge"))
        );
        assert!(allowed.contains(&nt("cache.m6g.2xlarge")));
        assert!(!allowed.contains(&nt("cache.r6gd.xlarge")));
        assert!(!allowed.contains(&nt("cache.r3.xlarge")));
        assert_eq!(next_in_family(&nt("cache.r6g.16xlarge"), &[]), None);
    }

    #[test]
    fn scale_ups_match_the_botocore_example_shape() {
        // botocore's example (from a cache.r3.large-sized group) lists m4 and r3 sizes
        // alphabetically; our list is alphabetical and holds only larger types too.
        let ups = scale_ups_from(&nt("cache.r6g.large"));
        let names: Vec<String> = ups.iter().map(|t| t.to_string()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(!names.contains(&"cache.r6g.large".to_string()));
    }

    #[test]
    fn caps_compare_by_size_in_family_and_by_memory_across() {
        let cap = nt("cache.r6g.2xlarge");
        assert_eq!(within_cap(&nt("cache.r6g.xlarge"), &cap), Ok(true));
        assert_eq!(within_cap(&nt("cache.r6g.2xlarge"), &cap), Ok(true));
        assert_eq!(within_cap(&nt("cache.r6g.4xlarge"), &cap), Ok(false));
        assert_eq!(within_cap(&nt("cache.m6g.2xlarge"), &cap), Ok(true));
        assert_eq!(within_cap(&nt("cache.r7g.4xlarge"), &cap), Ok(false));
        assert!(within_cap(&nt("cache.x9z.large"), &cap).is_err());
    }
}
