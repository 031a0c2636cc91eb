//! Foresight: at this rate, when is the group full? A pure reading of the memory series the
//! [`MemorySeries`](super::ports::MemorySeries) port returns over the policy's
//! `forecast_window` (default the last hour), made when a run is planned.
//!
//! # The fit
//!
//! For each node, the readings in the window (`DatabaseMemoryUsagePercentage`, the `Maximum`
//! of each minute) get an ordinary least-squares line: with `x` the minutes since the node's
//! first reading and `y` the percent,
//!
//! ```text
//! slope = Σ (x − x̄)(y − ȳ) / Σ (x − x̄)²        (percent per minute)
//! ```
//!
//! That is the average rate over the whole window, so one spike or a dip does not swing it the
//! way "the last reading minus the first" would. Then:
//!
//! - a slope within ±[`STEADY_PER_MIN`] (0.05 %/min, 3 % an hour) is **steady**; above it
//!   **rising**, below it **falling**;
//! - a rising node is full (100 % of the memory left for data) in `(100 − latest) / slope`
//!   minutes, counted from its latest reading (at most a period or two old) — a straight line,
//!   not a model of the workload: it says where the last hour leads if nothing changes;
//! - the group's forecast is its node that fills soonest; with none rising, its fullest node
//!   (the highest latest reading), so a shard filling fast behind a full but flat one is not
//!   hidden.
//!
//! Fewer than [`MIN_POINTS`] readings for every node, or none at all, is no forecast: the
//! caller shows the trend as unknown and says why, it never guesses (nor fails the plan).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::{CacheClusterId, format_duration};

use super::ports::NodeSeries;

/// "Full": the whole of the memory left for data (what the metric measures).
pub const FULL_PERCENT: f64 = 100.0;
/// A slope within ± this many percent per minute is steady (3 % an hour).
pub const STEADY_PER_MIN: f64 = 0.05;
/// A node needs this many readings in the window for a line through them to mean anything.
pub const MIN_POINTS: usize = 3;

/// Which way memory is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trend {
    Rising,
    Steady,
    Falling,
}

/// Where the group's memory is heading, from one node's readings over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// The node the forecast is for (the one that fills soonest, else the fullest).
    pub node: CacheClusterId,
    /// The least-squares slope, in percent per minute.
    pub slope_per_min: f64,
    /// The node's latest reading, in percent.
    pub latest: f64,
    /// Rising: how long from the latest reading until 100 % (zero: already there).
    #[serde(with = "opt_duration_ms", default)]
    pub full_in: Option<Duration>,
    pub trend: Trend,
    /// The node's readings the line went through.
    pub points_used: usize,
    /// How far back the readings were asked for.
    #[serde(with = "crate::domain::duration_ms")]
    pub window: Duration,
}

/// The least-squares slope of `points` in percent per minute, or `None` without
/// [`MIN_POINTS`] distinct times.
pub fn slope_per_min(points: &[(crate::domain::Timestamp, f64)]) -> Option<f64> {
    let first = points.first()?.0;
    let xy: Vec<(f64, f64)> = points
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|(t, v)| ((t.as_millis() - first.as_millis()) as f64 / 60_000.0, *v))
        .collect();
    if xy.len() < MIN_POINTS {
        return None;
    }
    let n = xy.len() as f64;
    let mean_x = xy.iter().map(|(x, _)| x).sum::<f64>() / n;
    let mean_y = xy.iter().map(|(_, y)| y).sum::<f64>() / n;
    let sxx: f64 = xy.iter().map(|(x, _)| (x - mean_x).powi(2)).sum();
    let sxy: f64 = xy.iter().map(|(x, y)| (x - mean_x) * (y - mean_y)).sum();
    if sxx <= 0.0 {
        return None;
    }
    Some(sxy / sxx).filter(|s| s.is_finite())
}

/// One node's forecast, when it has enough readings.
fn for_node(s: &NodeSeries, window: Duration) -> Option<Forecast> {
    let points: Vec<_> = s
        .points
        .iter()
        .filter(|(_, v)| v.is_finite())
        .copied()
        .collect();
    let slope = slope_per_min(&points)?;
    let latest = points.last()?.1;
    let trend = if slope >= STEADY_PER_MIN {
        Trend::Rising
    } else if slope <= -STEADY_PER_MIN {
        Trend::Falling
    } else {
        Trend::Steady
    };
    let full_in = (trend == Trend::Rising).then(|| {
        let minutes = ((FULL_PERCENT - latest) / slope).max(0.0);
        Duration::from_secs((minutes * 60.0).min(u32::MAX as f64).round() as u64)
    });
    // Kept short (whole seconds above; 4 and 2 decimals here), so a stored run reads back
    // exactly what was written.
    Some(Forecast {
        node: s.node.clone(),
        slope_per_min: (slope * 1e4).round() / 1e4,
        latest: (latest * 1e2).round() / 1e2,
        full_in,
        trend,
        points_used: points.len(),
        window,
    })
}

/// The group's forecast from its nodes' series over `window`: the node that fills soonest, or
/// with none rising the fullest. `Err`: why there is none (no readings, too few), in words
/// for the card.
pub fn forecast(series: &[NodeSeries], window: Duration) -> Result<Forecast, String> {
    let over = format_duration(window);
    let readings: usize = series.iter().map(|s| s.points.len()).max().unwrap_or(0);
    if readings == 0 {
        return Err(format!("CloudWatch has no readings for the last {over}"));
    }
    let each: Vec<Forecast> = series.iter().filter_map(|s| for_node(s, window)).collect();
    let soonest = each
        .iter()
        .filter(|f| f.full_in.is_some())
        .min_by(|a, b| a.full_in.cmp(&b.full_in));
    let fullest = || {
        each.iter().fold(None::<&Forecast>, |best, f| match best {
            Some(b) if b.latest >= f.latest => Some(b),
            _ => Some(f),
        })
    };
    match soonest.or_else(fullest) {
        Some(f) => Ok(f.clone()),
        None => Err(format!(
            "only {readings} reading(s) in the last {over}; a trend needs {MIN_POINTS}"
        )),
    }
}

/// Serde helper: an optional duration stored as milliseconds.
pub(crate) mod opt_duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timestamp;

    const HOUR: Duration = Duration::from_secs(3600);

    fn node(n: u32) -> CacheClusterId {
        CacheClusterId::parse(&format!("prod-jobs-00{n}")).unwrap()
    }

    /// One reading a minute for `minutes`, `start` percent rising by `per_min`, ending now.
    fn series(n: u32, minutes: i64, start: f64, per_min: f64) -> NodeSeries {
        let t0 = 1_764_121_920_000 - minutes * 60_000;
        NodeSeries {
            node: node(n),
            points: (0..minutes)
                .map(|i| {
                    let t = Timestamp::from_millis(t0 + i * 60_000);
                    (t, start + per_min * i as f64)
                })
                .collect(),
        }
    }

    fn minutes(f: &Forecast) -> f64 {
        f.full_in.expect("full at some point").as_secs_f64() / 60.0
    }

    #[test]
    fn a_rising_line_is_full_when_it_reaches_a_hundred_percent() {
        // 45 % an hour ago, +0.8 %/min: 92.2 % at the last reading, 100 % ~9.75 min later.
        let f = forecast(&[series(1, 60, 45.0, 0.8)], HOUR).unwrap();
        assert_eq!(f.trend, Trend::Rising);
        assert!((f.slope_per_min - 0.8).abs() < 1e-9, "{}", f.slope_per_min);
        assert!((f.latest - 92.2).abs() < 1e-9);
        assert!((minutes(&f) - 9.75).abs() < 0.01, "{}", minutes(&f));
        assert_eq!(f.points_used, 60);
        assert_eq!(f.node, node(1));
    }

    #[test]
    fn noise_around_a_rising_line_still_gives_its_slope() {
        let mut s = series(1, 60, 40.0, 0.5);
        for (i, p) in s.points.iter_mut().enumerate() {
            p.1 += if i % 2 == 0 { 3.0 } else { -3.0 };
        }
        let f = forecast(&[s], HOUR).unwrap();
        assert!((f.slope_per_min - 0.5).abs() < 0.02, "{}", f.slope_per_min);
        // From the last reading (66.5 %): (100 − 66.5) / 0.5 ≈ 67 min, within the noise.
        assert!((minutes(&f) - 67.0).abs() < 3.0, "{}", minutes(&f));
    }

    #[test]
    fn a_flat_line_is_steady_and_never_full() {
        let f = forecast(&[series(1, 60, 40.0, 0.0)], HOUR).unwrap();
        assert_eq!(f.trend, Trend::Steady);
        assert_eq!(f.full_in, None);
        // Under the threshold either way is still steady.
        let f = forecast(&[series(1, 60, 40.0, 0.04)], HOUR).unwrap();
        assert_eq!(f.trend, Trend::Steady);
        let f = forecast(&[series(1, 60, 40.0, -0.04)], HOUR).unwrap();
        assert_eq!(f.trend, Trend::Steady);
    }

    #[test]
    fn a_falling_line_is_falling() {
        let f = forecast(&[series(1, 60, 90.0, -0.3)], HOUR).unwrap();
        assert_eq!(f.trend, Trend::Falling);
        assert_eq!(f.full_in, None);
        assert!((f.slope_per_min + 0.3).abs() < 1e-9);
    }

    #[test]
    fn too_few_readings_or_none_are_no_forecast_and_say_why() {
        let why = forecast(&[series(1, 2, 90.0, 1.0)], HOUR).unwrap_err();
        assert!(why.contains("only 2 reading(s) in the last 1h"), "{why}");
        let why = forecast(&[series(1, 0, 90.0, 1.0)], HOUR).unwrap_err();
        assert!(why.contains("no readings for the last 1h"), "{why}");
        assert!(forecast(&[], HOUR).is_err());
        // Three is enough.
        assert!(forecast(&[series(1, 3, 90.0, 1.0)], HOUR).is_ok());
    }

    #[test]
    fn the_node_that_fills_soonest_wins_over_a_fuller_flat_one() {
        let flat_full = series(1, 60, 93.0, 0.0);
        let filling = series(2, 60, 20.0, 1.0);
        let f = forecast(&[flat_full.clone(), filling], HOUR).unwrap();
        assert_eq!(f.node, node(2));
        assert_eq!(f.trend, Trend::Rising);
        // With nothing rising, the fullest node speaks for the group.
        let falling = series(2, 60, 90.0, -0.5);
        let f = forecast(&[falling, flat_full], HOUR).unwrap();
        assert_eq!(f.node, node(1));
        assert_eq!(f.trend, Trend::Steady);
    }

    #[test]
    fn already_full_is_full_now_and_non_finite_readings_are_skipped() {
        let mut s = series(1, 10, 96.0, 0.5);
        s.points.insert(3, (s.points[3].0, f64::NAN));
        let f = forecast(&[s], HOUR).unwrap();
        assert_eq!(f.points_used, 10);
        assert_eq!(f.full_in, Some(Duration::ZERO));
    }

    #[test]
    fn a_forecast_reads_back_what_it_writes() {
        let f = forecast(&[series(1, 60, 45.0, 0.8)], HOUR).unwrap();
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<Forecast>(&json).unwrap(), f);
        let flat = forecast(&[series(1, 60, 45.0, 0.0)], HOUR).unwrap();
        let json = serde_json::to_string(&flat).unwrap();
        assert_eq!(serde_json::from_str::<Forecast>(&json).unwrap(), flat);
    }
}
