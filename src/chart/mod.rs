//! The memory graph: a group's memory, node by node, as a PNG drawn in memory.
//!
//! Owns what the graph shows ([`MemoryChart::plot`]: one line per node, the alarm threshold,
//! the alarm and the upsize as vertical markers, the title and the axes, all in UTC) and
//! drawing it ([`MemoryChart::render_png`]) with plotters' bitmap backend and the DejaVu Sans
//! font embedded in the binary (`DejaVuSans.ttf` next to this file, licence beside it): no
//! fontconfig and no system fonts, so the image is the same on every machine.
//!
//! It reads nothing and sends nothing: the series come from the `cloudwatch` port, the PNG
//! goes to Slack through whoever calls this. A graph that cannot be drawn is a
//! [`ChartError`] the caller turns into a short note.

use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::domain::{ReplicationGroupId, Timestamp};
use crate::workflow::ports::NodeSeries;

/// The embedded font (DejaVu Sans 2.37; see `LICENSE-DejaVuSans.txt`).
static FONT: &[u8] = include_bytes!("DejaVuSans.ttf");
/// The family name plotters' default text styles ask for.
const FAMILY: &str = "sans-serif";

/// The size of the PNG unless [`MemoryChart::size`] says otherwise: readable in a Slack
/// thread's preview and when opened.
pub const DEFAULT_SIZE: (u32, u32) = (1200, 600);
const MIN_SIZE: (u32, u32) = (320, 200);
const MAX_SIZE: (u32, u32) = (4000, 3000);

/// What the graph is of. Build it with [`MemoryChart::new`] and the optional markers.
#[derive(Debug, Clone)]
pub struct MemoryChart<'a> {
    group: &'a ReplicationGroupId,
    series: &'a [NodeSeries],
    start: Timestamp,
    end: Timestamp,
    threshold: Option<f64>,
    /// What the threshold line is called in the legend ("alarm threshold" unless said).
    threshold_label: &'static str,
    alarm_at: Option<Timestamp>,
    upsize_started: Option<Timestamp>,
    upsize_ended: Option<Timestamp>,
    size: (u32, u32),
}

/// Why there is no graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChartError {
    /// No node has a single point in the window: say "no data" instead of a graph.
    #[error("CloudWatch has no memory data for this window")]
    NoData,
    /// The window ends before it starts, or the size is out of bounds: a bug in the caller.
    #[error("the graph cannot be drawn: {0}")]
    Invalid(String),
    /// The drawing or the PNG encoding failed.
    #[error("drawing the graph failed: {0}")]
    Draw(String),
}

/// What the graph shows, decided before anything is drawn: the part tests read.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// The x axis, in milliseconds since the epoch.
    pub x_range: (i64, i64),
    /// Where the x axis is labelled: whole UTC minutes, hours or days, at most nine.
    pub x_ticks: Vec<i64>,
    /// The y axis, in percent: 0 to at least 100.
    pub y_max: f64,
    pub lines: Vec<Line>,
    /// The alarm threshold, as a horizontal line.
    pub threshold: Option<f64>,
    /// Its name in the legend.
    pub threshold_label: &'static str,
    /// Vertical markers inside the window, in time order.
    pub markers: Vec<Marker>,
}

/// One node's line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub label: String,
    pub color: (u8, u8, u8),
    /// `(milliseconds since the epoch, percent)`, inside the window, in time order.
    pub points: Vec<(i64, f64)>,
}

/// A moment marked with a vertical line.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub label: String,
    pub at: Timestamp,
    pub color: (u8, u8, u8),
}

/// Colours for the nodes' lines, distinct from the markers' (Tableau 10 without its red).
const LINE_COLORS: [(u8, u8, u8); 8] = [
    (31, 119, 180),
    (44, 160, 44),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];
const THRESHOLD_COLOR: (u8, u8, u8) = (214, 39, 40);
const ALARM_COLOR: (u8, u8, u8) = (140, 0, 0);
const UPSIZE_START_COLOR: (u8, u8, u8) = (255, 127, 14);
const UPSIZE_END_COLOR: (u8, u8, u8) = (0, 128, 0);

impl<'a> MemoryChart<'a> {
    /// The graph of `series` (one line per node) over `[start, end)` for `group`.
    pub fn new(
        group: &'a ReplicationGroupId,
        series: &'a [NodeSeries],
        start: Timestamp,
        end: Timestamp,
    ) -> MemoryChart<'a> {
        MemoryChart {
            group,
            series,
            start,
            end,
            threshold: None,
            threshold_label: "alarm threshold",
            alarm_at: None,
            upsize_started: None,
            upsize_ended: None,
            size: DEFAULT_SIZE,
        }
    }

    /// The alarm's threshold, in percent, drawn as a horizontal line.
    pub fn threshold(mut self, percent: f64) -> Self {
        self.threshold = Some(percent).filter(|p| p.is_finite());
        self
    }

    /// The line is another limit than the alarm's (a scale-down's "stay below").
    pub fn threshold_label(mut self, label: &'static str) -> Self {
        self.threshold_label = label;
        self
    }

    /// When the alarm fired.
    pub fn alarm_at(mut self, at: Timestamp) -> Self {
        self.alarm_at = Some(at);
        self
    }

    /// When the upsize started and, once it has, when it ended.
    pub fn upsize(mut self, started: Timestamp, ended: Option<Timestamp>) -> Self {
        self.upsize_started = Some(started);
        self.upsize_ended = ended;
        self
    }

    /// The PNG's width and height in pixels (320×200 to 4000×3000).
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }

    /// What would be drawn; [`ChartError::NoData`] when no node has a point in the window.
    pub fn plot(&self) -> Result<Plot, ChartError> {
        if self.end <= self.start {
            return Err(ChartError::Invalid(format!(
                "the window {} – {} is empty",
                self.start.to_rfc3339(),
                self.end.to_rfc3339()
            )));
        }
        let (w, h) = self.size;
        if !(MIN_SIZE.0..=MAX_SIZE.0).contains(&w) || !(MIN_SIZE.1..=MAX_SIZE.1).contains(&h) {
            return Err(ChartError::Invalid(format!("a size of {w}×{h} pixels")));
        }
        let (from, to) = (self.start.as_millis(), self.end.as_millis());
        let lines: Vec<Line> = self
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut points: Vec<(i64, f64)> = s
                    .points
                    .iter()
                    .map(|(t, v)| (t.as_millis(), *v))
                    .filter(|(t, v)| (from..to).contains(t) && v.is_finite())
                    .collect();
                points.sort_by_key(|(t, _)| *t);
                Line {
                    label: s.node.to_string(),
                    color: LINE_COLORS[i % LINE_COLORS.len()],
                    points,
                }
            })
            .collect();
        if lines.iter().all(|l| l.points.is_empty()) {
            return Err(ChartError::NoData);
        }
        let highest = lines
            .iter()
            .flat_map(|l| l.points.iter().map(|(_, v)| *v))
            .chain(self.threshold)
            .fold(0.0, f64::max);
        let y_max = ((highest / 10.0).ceil() * 10.0).max(100.0);
        let mut markers: Vec<Marker> = [
            (self.alarm_at, "alarm", ALARM_COLOR),
            (self.upsize_started, "upsize started", UPSIZE_START_COLOR),
            (self.upsize_ended, "upsize done", UPSIZE_END_COLOR),
        ]
        .into_iter()
        .filter_map(|(at, what, color)| {
            let at = at.filter(|t| (from..=to).contains(&t.as_millis()))?;
            Some(Marker {
                label: format!("{what} {}", short_time(at, self.start, self.end)),
                at,
                color,
            })
        })
        .collect();
        markers.sort_by_key(|m| m.at);
        Ok(Plot {
            title: format!(
                "{}: memory used per node, {}",
                self.group,
                window_text(self.start, self.end)
            ),
            x_label: "time (UTC)".to_string(),
            y_label: "DatabaseMemoryUsagePercentage (%)".to_string(),
            x_range: (from, to),
            x_ticks: ticks(from, to),
            y_max,
            lines,
            threshold: self.threshold,
            threshold_label: self.threshold_label,
            markers,
        })
    }

    /// The graph as a PNG.
    pub fn render_png(&self) -> Result<Vec<u8>, ChartError> {
        let plot = self.plot()?;
        register_embedded_font()?;
        let (w, h) = self.size;
        let mut pixels = vec![0u8; w as usize * h as usize * 3];
        draw(&plot, &mut pixels, self.start, self.end, (w, h))
            .map_err(|e| ChartError::Draw(e.to_string()))?;
        encode_png(&pixels, w, h)
    }
}

/// Give plotters the embedded font, once per process.
fn register_embedded_font() -> Result<(), ChartError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font(FAMILY, FontStyle::Normal, FONT)
                .map_err(|_| "the embedded font does not parse".to_string())
        })
        .clone()
        .map_err(ChartError::Draw)
}

fn rgb((r, g, b): (u8, u8, u8)) -> RGBColor {
    RGBColor(r, g, b)
}

fn draw(
    plot: &Plot,
    pixels: &mut [u8],
    start: Timestamp,
    end: Timestamp,
    size: (u32, u32),
) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(pixels, size).into_drawing_area();
    root.fill(&WHITE)?;
    let (x0, x1) = plot.x_range;
    let mut chart = ChartBuilder::on(&root)
        .caption(&plot.title, (FAMILY, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (x0..x1).with_key_points(plot.x_ticks.clone()),
            0f64..plot.y_max,
        )?;
    chart
        .configure_mesh()
        .y_labels(11)
        .x_label_formatter(&|ms| short_time(Timestamp::from_millis(*ms), start, end))
        .y_label_formatter(&|v| format!("{v:.0} %"))
        .x_desc(plot.x_label.as_str())
        .y_desc(plot.y_label.as_str())
        .label_style((FAMILY, 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;

    for line in &plot.lines {
        let color = rgb(line.color);
        // A lone point would be an invisible line of length zero: mark it.
        let dots = if line.points.len() <= 2 { 4 } else { 0 };
        chart
            .draw_series(
                LineSeries::new(line.points.iter().copied(), color.stroke_width(2))
                    .point_size(dots),
            )?
            .label(line.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    if let Some(threshold) = plot.threshold {
        let color = rgb(THRESHOLD_COLOR);
        chart
            .draw_series(DashedLineSeries::new(
                [(x0, threshold), (x1, threshold)],
                10,
                6,
                color.stroke_width(2),
            ))?
            .label(format!("{} {threshold:.0} %", plot.threshold_label))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    for marker in &plot.markers {
        let color = rgb(marker.color);
        let x = marker.at.as_millis();
        chart
            .draw_series(DashedLineSeries::new(
                [(x, 0.0), (x, plot.y_max)],
                6,
                4,
                color.stroke_width(2),
            ))?
            .label(marker.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .draw()?;
    root.present()?;
    Ok(())
}

fn encode_png(pixels: &[u8], w: u32, h: u32) -> Result<Vec<u8>, ChartError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // Default, not Best: the same graph is 50.6 KB instead of 49.5 and takes 7.1 ms to
    // encode instead of 20.8 (release build), which was 93 % of a graph's cost; in an alarm
    // storm the graphs share the CPU with the alarms' intake. (Fast: 0.6 ms, but 132 KB.)
    encoder.set_compression(png::Compression::Default);
    let mut writer = encoder
        .write_header()
        .map_err(|e| ChartError::Draw(format!("PNG header: {e}")))?;
    writer
        .write_image_data(pixels)
        .map_err(|e| ChartError::Draw(format!("PNG data: {e}")))?;
    writer
        .finish()
        .map_err(|e| ChartError::Draw(format!("PNG end: {e}")))?;
    Ok(out)
}

/// Ticks at the first step of 1, 2, 5, 10, 15 or 30 minutes, 1, 2, 3, 6 or 12 hours or 1
/// day that gives at most nine, on whole multiples of it since midnight UTC.
fn ticks(from: i64, to: i64) -> Vec<i64> {
    const MINUTES: [i64; 12] = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440];
    let span = to - from;
    let step = MINUTES
        .iter()
        .map(|m| m * 60_000)
        .find(|step| span / step < 9)
        .unwrap_or_else(|| (span / 8).div_euclid(86_400_000).max(1) * 86_400_000);
    let first = from.div_euclid(step) * step + if from.rem_euclid(step) == 0 { 0 } else { step };
    (0..)
        .map(|i| first + i * step)
        .take_while(|t| *t <= to)
        .collect()
}

/// `HH:MM` for a window within a day, `MM-DD HH:MM` for a longer one.
fn short_time(t: Timestamp, start: Timestamp, end: Timestamp) -> String {
    let full = t.to_rfc3339(); // 2026-11-26T03:12:09.120Z
    if end.since(start).as_secs() > 86_400 {
        format!("{} {}", &full[5..10], &full[11..16])
    } else {
        full[11..16].to_string()
    }
}

/// `2026-11-26 03:12 – 06:12 UTC`, the date repeated only when it changes.
fn window_text(start: Timestamp, end: Timestamp) -> String {
    let (s, e) = (start.to_rfc3339(), end.to_rfc3339());
    let (sd, st, ed, et) = (&s[..10], &s[11..16], &e[..10], &e[11..16]);
    if sd == ed {
        format!("{sd} {st} – {et} UTC")
    } else {
        format!("{sd} {st} – {ed} {et} UTC")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CacheClusterId;

    // 2023-11-14T22:14:00Z, a whole minute.
    const T0: i64 = 1_700_000_040_000;

    fn t(minutes: i64) -> Timestamp {
        Timestamp::from_millis(T0 + minutes * 60_000)
    }

    fn group() -> ReplicationGroupId {
        ReplicationGroupId::parse("prod-jobs").unwrap()
    }

    fn node(id: &str, points: &[(i64, f64)]) -> NodeSeries {
        NodeSeries {
            node: CacheClusterId::parse(id).unwrap(),
            points: points.iter().map(|(m, v)| (t(*m), *v)).collect(),
        }
    }

    fn rising_then_falling() -> Vec<NodeSeries> {
        let primary: Vec<(i64, f64)> = (0..180)
            .map(|m| {
                (
                    m,
                    if m < 100 {
                        60.0 + m as f64 * 0.33
                    } else {
                        51.0
                    },
                )
            })
            .collect();
        let replica: Vec<(i64, f64)> = primary.iter().map(|(m, v)| (*m, v - 4.0)).collect();
        vec![
            node("prod-jobs-001", &primary),
            node("prod-jobs-002", &replica),
        ]
    }

    /// Width and height from the PNG itself, and the decoded pixels.
    fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        assert_eq!(&png_bytes[..8], b"\x89PNG\r\n\x1a\n", "the PNG signature");
        let decoder = png::Decoder::new(png_bytes);
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    #[test]
    fn the_plot_has_a_line_per_node_the_threshold_and_the_markers_in_the_window() {
        let series = rising_then_falling();
        let plot = MemoryChart::new(&group(), &series, t(0), t(180))
            .threshold(85.0)
            .alarm_at(t(75))
            .upsize(t(80), Some(t(100)))
            .plot()
            .unwrap();
        assert_eq!(
            plot.title,
            "prod-jobs: memory used per node, 2023-11-14 22:14 – 2023-11-15 01:14 UTC"
        );
        assert_eq!(plot.x_range, (T0, T0 + 180 * 60_000));
        assert_eq!(plot.y_max, 100.0);
        let labels: Vec<&str> = plot.lines.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(labels, ["prod-jobs-001", "prod-jobs-002"]);
        assert_eq!(plot.lines[0].points.len(), 180);
        assert_eq!(
            plot.lines[0].points[99],
            (t(99).as_millis(), 60.0 + 99.0 * 0.33)
        );
        assert_ne!(plot.lines[0].color, plot.lines[1].color);
        assert_eq!(plot.threshold, Some(85.0));
        let markers: Vec<&str> = plot.markers.iter().map(|m| m.label.as_str()).collect();
        assert_eq!(
            markers,
            ["alarm 23:29", "upsize started 23:34", "upsize done 23:54"]
        );
    }

    #[test]
    fn points_and_markers_outside_the_window_are_left_out_and_high_values_raise_the_axis() {
        let series = vec![node("a-001", &[(-5, 50.0), (10, 104.0), (30, 60.0)])];
        let plot = MemoryChart::new(&group(), &series, t(0), t(30))
            .alarm_at(t(-1))
            .upsize(t(20), None)
            .plot()
            .unwrap();
        assert_eq!(plot.lines[0].points, vec![(t(10).as_millis(), 104.0)]);
        assert_eq!(plot.y_max, 110.0);
        assert_eq!(plot.markers.len(), 1);
        assert_eq!(plot.markers[0].label, "upsize started 22:34");
    }

    #[test]
    fn no_point_in_the_window_is_no_data_not_an_empty_graph() {
        let none: Vec<NodeSeries> = Vec::new();
        assert_eq!(
            MemoryChart::new(&group(), &none, t(0), t(60)).render_png(),
            Err(ChartError::NoData)
        );
        let empty = vec![node("a-001", &[]), node("a-002", &[(90, 50.0)])];
        assert_eq!(
            MemoryChart::new(&group(), &empty, t(0), t(60)).render_png(),
            Err(ChartError::NoData)
        );
        assert!(matches!(
            MemoryChart::new(&group(), &empty, t(60), t(60)).plot(),
            Err(ChartError::Invalid(_))
        ));
        assert!(matches!(
            MemoryChart::new(&group(), &empty, t(0), t(60))
                .size(10, 10)
                .plot(),
            Err(ChartError::Invalid(_))
        ));
    }

    #[test]
    fn the_graph_is_a_png_of_the_asked_size() {
        let series = rising_then_falling();
        let png_bytes = MemoryChart::new(&group(), &series, t(0), t(180))
            .threshold(85.0)
            .alarm_at(t(75))
            .upsize(t(80), Some(t(100)))
            .render_png()
            .unwrap();
        let (w, h, pixels) = decode(&png_bytes);
        assert_eq!((w, h), DEFAULT_SIZE);
        // Something was drawn: far from all white, with the lines' colours in it.
        let colored = pixels
            .chunks(3)
            .filter(|p| p[0] != p[1] || p[1] != p[2])
            .count();
        assert!(colored > 1000, "{colored} coloured pixels");
        let small = MemoryChart::new(&group(), &series, t(0), t(180))
            .size(640, 320)
            .render_png()
            .unwrap();
        assert_eq!(decode(&small).0, 640);
        assert_eq!(decode(&small).1, 320);
    }

    #[test]
    fn a_single_point_draws() {
        let series = vec![node("a-001", &[(5, 70.0)])];
        let png_bytes = MemoryChart::new(&group(), &series, t(0), t(60))
            .render_png()
            .unwrap();
        let (_, _, pixels) = decode(&png_bytes);
        let line = LINE_COLORS[0];
        let dot = pixels
            .chunks(3)
            .filter(|p| (p[0], p[1], p[2]) == line)
            .count();
        assert!(dot > 0, "the lone point is marked in its line's colour");
    }

    #[test]
    fn different_data_draw_different_graphs_and_the_same_data_the_same() {
        let a = rising_then_falling();
        let mut b = rising_then_falling();
        b[0].points[150].1 = 95.0;
        let draw = |s: &[NodeSeries]| {
            MemoryChart::new(&group(), s, t(0), t(180))
                .threshold(85.0)
                .render_png()
                .unwrap()
        };
        assert_eq!(draw(&a), draw(&a));
        assert_ne!(draw(&a), draw(&b));
    }

    #[test]
    fn times_read_as_utc_clock_times_with_the_date_for_long_windows() {
        assert_eq!(short_time(t(75), t(0), t(180)), "23:29");
        assert_eq!(short_time(t(75), t(0), t(3 * 1440)), "11-14 23:29");
        assert_eq!(window_text(t(0), t(60)), "2023-11-14 22:14 – 23:14 UTC");
    }

    #[test]
    fn the_time_axis_is_labelled_on_round_utc_times() {
        let labels = |from: i64, to: i64| -> Vec<String> {
            ticks(t(from).as_millis(), t(to).as_millis())
                .into_iter()
                .map(|ms| short_time(Timestamp::from_millis(ms), t(from), t(to)))
                .collect()
        };
        // Three hours from 22:14: every 30 minutes from 22:30.
        assert_eq!(
            labels(0, 180),
            ["22:30", "23:00", "23:30", "00:00", "00:30", "01:00"]
        );
        // Fifteen minutes: every two minutes.
        assert_eq!(labels(0, 15).first().map(String::as_str), Some("22:14"));
        assert_eq!(labels(0, 15).len(), 8);
        // A week: daily, at midnight.
        let week = labels(0, 7 * 1440);
        assert_eq!(week.first().map(String::as_str), Some("11-15 00:00"));
        assert!(week.len() <= 9, "{week:?}");
    }
}
