//! What a plan costs: the on-demand prices of the node types it names, as read when it was
//! made ([`PriceSheet`]), and the arithmetic every card shares ([`monthly`],
//! [`PriceSheet::monthly_delta`]).
//!
//! Direction-agnostic: a delta is `to − from`, so a step up costs more (positive) and a step
//! down saves (negative). Prices are shown, never used to decide anything, and a price that
//! could not be read stays "unknown, and why" rather than a guess.

use serde::{Deserialize, Serialize};

use crate::domain::NodeType;

use super::preflight::Check;

/// The hours in a month as AWS's own price pages count them (365 days × 24 h ÷ 12 = 730):
/// what "a month" means on every card.
pub const HOURS_PER_MONTH: f64 = 730.0;

/// What `nodes` nodes at `hourly` USD per node-hour cost in a month of [`HOURS_PER_MONTH`].
pub fn monthly(hourly: f64, nodes: usize) -> f64 {
    hourly * HOURS_PER_MONTH * nodes as f64
}

/// One node type's on-demand price, or why it is unknown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePrice {
    pub node_type: NodeType,
    /// USD per node-hour.
    pub hourly: Check<f64>,
}

/// The on-demand prices of a plan's node types (its current type, its target, every choice),
/// in the group's region, as read when the plan was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceSheet {
    /// The region the prices are for: the group's.
    pub region: String,
    pub prices: Vec<NodePrice>,
}

impl PriceSheet {
    /// USD per node-hour of `node_type`, or why it is unknown.
    pub fn hourly(&self, node_type: &NodeType) -> Result<f64, &str> {
        match self.prices.iter().find(|p| &p.node_type == node_type) {
            Some(NodePrice {
                hourly: Check::Known(h),
                ..
            }) => Ok(*h),
            Some(NodePrice {
                hourly: Check::Unknown(why),
                ..
            }) => Err(why),
            None => Err("not read"),
        }
    }

    /// What moving `nodes` nodes from `from` to `to` changes a month's bill by, in USD
    /// (negative: a saving), or why it is unknown (the first unknown price's reason).
    pub fn monthly_delta(&self, from: &NodeType, to: &NodeType, nodes: usize) -> Result<f64, &str> {
        let (from, to) = (self.hourly(from)?, self.hourly(to)?);
        Ok(monthly(to, nodes) - monthly(from, nodes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NodeType {
        NodeType::parse(s).unwrap()
    }

    fn sheet() -> PriceSheet {
        PriceSheet {
            region: "us-east-1".into(),
            prices: vec![
                NodePrice {
                    node_type: t("cache.r6g.large"),
                    hourly: Check::Known(0.206),
                },
                NodePrice {
                    node_type: t("cache.r6g.xlarge"),
                    hourly: Check::Known(0.411),
                },
                NodePrice {
                    node_type: t("cache.r6g.2xlarge"),
                    hourly: Check::Unknown("throttled".into()),
                },
            ],
        }
    }

    #[test]
    fn a_month_is_730_hours_per_node() {
        assert!((monthly(0.206, 3) - 451.14).abs() < 1e-9);
        assert_eq!(monthly(0.5, 0), 0.0);
    }

    #[test]
    fn the_delta_is_positive_up_negative_down_and_unknown_with_its_reason() {
        let s = sheet();
        let (large, xlarge) = (t("cache.r6g.large"), t("cache.r6g.xlarge"));
        let up = s.monthly_delta(&large, &xlarge, 3).unwrap();
        assert!((up - 448.95).abs() < 1e-9, "{up}");
        let down = s.monthly_delta(&xlarge, &large, 3).unwrap();
        assert!((down + 448.95).abs() < 1e-9, "{down}");
        assert_eq!(
            s.monthly_delta(&large, &t("cache.r6g.2xlarge"), 3),
            Err("throttled")
        );
        assert_eq!(
            s.monthly_delta(&t("cache.m7g.large"), &large, 3),
            Err("not read")
        );
    }
}
