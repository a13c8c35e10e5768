//! PNG plots of a comparison, drawn with plotters' bitmap backend. Text is
//! rendered with the embedded DejaVu Sans Mono font (Bitstream Vera licence,
//! `assets/DejaVuSansMono-LICENSE.txt`) through plotters' `ab_glyph`
//! feature, so no system font library is needed.

use std::path::Path;

use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use crate::error::{Result, RunnerError};

/// The embedded font.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");

/// One curve: a mean line and a min–max band over seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// x values.
    pub x: Vec<f64>,
    /// Mean over seeds (NaN where no seed has a value).
    pub mean: Vec<f64>,
    /// Minimum over seeds.
    pub min: Vec<f64>,
    /// Maximum over seeds.
    pub max: Vec<f64>,
    /// A horizontal reference line drawn dashed in the series' colour (its
    /// KL limit), if any.
    pub limit: Option<LimitLine>,
}

/// A series' own reference line: drawn dashed, 3 px wide, in the series'
/// colour, on top of every curve and band (a trust region's KL hugs its
/// limit, and a line under the curve cannot be seen). Series that share a
/// value interleave their dashes, so each colour shows along the line.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitLine {
    /// Where it is drawn (y).
    pub value: f64,
    /// Its legend entry, e.g. `trpo: mean bound 0.01`.
    pub label: String,
}

/// Dash length of a limit line, in pixels.
const DASH_PX: u32 = 14;
/// Gap after each dash of a limit line, in pixels.
const GAP_PX: u32 = 5;
/// Width of a limit line, in pixels (the curves are 2).
const LIMIT_WIDTH: u32 = 3;

/// Colour of series `i`.
pub fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    C[i % C.len()]
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> RunnerError {
    RunnerError::Plot {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Draw `series` into a PNG at `path`: title, axis labels, min–max bands,
/// mean lines, reference lines (`hline`: a global one such as the reward
/// threshold, plus each series' own `limit`) and a legend.
pub fn draw(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    hline: Option<(f64, &str)>,
) -> Result<()> {
    draw_scaled(path, title, x_label, y_label, series, hline, false)
}

/// [`draw`] with a logarithmic y axis, for quantities that span decades such
/// as per-update KL. Values below [`LOG_FLOOR`] (including 0 and the tiny
/// negative numbers rounding can give an exact KL) are drawn at the floor.
pub fn draw_log_y(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    hline: Option<(f64, &str)>,
) -> Result<()> {
    draw_scaled(path, title, x_label, y_label, series, hline, true)
}

/// The smallest value a logarithmic axis shows (1e-6).
pub const LOG_FLOOR: f64 = 1e-6;

/// Width and height of every plot, in pixels.
pub const SIZE: (u32, u32) = (1000, 620);

fn draw_scaled(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    hline: Option<(f64, &str)>,
    log_y: bool,
) -> Result<()> {
    let backend = BitMapBackend::new(path, SIZE);
    let labels = Labels {
        title,
        x_label,
        y_label,
    };
    render(backend, path, &labels, series, hline, log_y)
}

/// A plot's title and axis labels.
struct Labels<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
}

/// Draw onto `backend` (a PNG file, or an RGB buffer in the tests); `path`
/// names the plot in errors.
fn render(
    backend: BitMapBackend<'_>,
    path: &Path,
    labels: &Labels<'_>,
    series: &[Series],
    hline: Option<(f64, &str)>,
    log_y: bool,
) -> Result<()> {
    let Labels {
        title,
        x_label,
        y_label,
    } = *labels;
    // plotters keeps fonts in a table of its own; registering is idempotent.
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| plot_err(path, "the embedded font is invalid"))?;
    let clamp = |y: f64| {
        if log_y && y.is_finite() {
            y.max(LOG_FLOOR)
        } else {
            y
        }
    };
    let series: Vec<Series> = series
        .iter()
        .map(|s| Series {
            mean: s.mean.iter().map(|&y| clamp(y)).collect(),
            min: s.min.iter().map(|&y| clamp(y)).collect(),
            max: s.max.iter().map(|&y| clamp(y)).collect(),
            limit: s.limit.as_ref().map(|l| LimitLine {
                value: clamp(l.value),
                label: l.label.clone(),
            }),
            ..s.clone()
        })
        .collect();
    let hline = hline.map(|(h, l)| (clamp(h), l));
    let finite = |v: &[f64]| {
        v.iter()
            .copied()
            .filter(|x| x.is_finite())
            .collect::<Vec<_>>()
    };
    let xs: Vec<f64> = series.iter().flat_map(|s| finite(&s.x)).collect();
    let mut ys: Vec<f64> = series
        .iter()
        .flat_map(|s| finite(&s.min).into_iter().chain(finite(&s.max)))
        .collect();
    ys.extend(
        series
            .iter()
            .filter_map(|s| s.limit.as_ref().map(|l| l.value)),
    );
    if let Some((h, _)) = hline {
        ys.push(h);
    }
    let range = |v: &[f64], pad: f64| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !lo.is_finite() || !hi.is_finite() {
            (0.0, 1.0)
        } else if hi - lo < 1e-12 {
            (lo - 1.0, hi + 1.0)
        } else {
            (lo - pad * (hi - lo), hi + pad * (hi - lo))
        }
    };
    let (x0, x1) = range(&xs, 0.0);

    let root = backend.into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80);
    let axes = Axes {
        path,
        x_label,
        y_label,
        x_range: (x0, x1),
    };
    if log_y {
        let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (y0, y1) = if lo.is_finite() && hi.is_finite() && hi > lo {
            (lo, hi * 1.5)
        } else {
            (LOG_FLOOR, 1.0)
        };
        let chart = builder
            .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
            .map_err(|e| plot_err(path, e))?;
        fill(chart, &axes, &series, hline, &|y: &f64| format!("{y:.0e}"))?;
    } else {
        let (y0, y1) = range(&ys, 0.05);
        let chart = builder
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| plot_err(path, e))?;
        let digits = if y1 - y0 >= 50.0 {
            0
        } else if y1 - y0 >= 5.0 {
            1
        } else {
            3
        };
        fill(chart, &axes, &series, hline, &|y: &f64| {
            format!("{y:.digits$}")
        })?;
    }
    root.present().map_err(|e| plot_err(path, e))?;
    Ok(())
}

/// A labelled point of a [`scatter`] plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Legend label.
    pub label: String,
    /// x value.
    pub x: f64,
    /// y value.
    pub y: f64,
}

/// Draw `points` into a PNG at `path` as filled circles, point `i` in
/// [`color`]`(i)` with its own legend entry: a trade-off plot (one point per
/// learner). Non-finite points are left out.
pub fn scatter(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[Point],
) -> Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| plot_err(path, "the embedded font is invalid"))?;
    let span = |v: Vec<f64>| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !lo.is_finite() || !hi.is_finite() {
            (0.0, 1.0)
        } else {
            let pad = if hi - lo < 1e-12 {
                1.0
            } else {
                0.08 * (hi - lo)
            };
            (lo - pad, hi + pad)
        }
    };
    let finite: Vec<&Point> = points
        .iter()
        .filter(|p| p.x.is_finite() && p.y.is_finite())
        .collect();
    let (x0, x1) = span(finite.iter().map(|p| p.x).collect());
    let (y0, y1) = span(finite.iter().map(|p| p.y).collect());
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&|x| format!("{x:.3}"))
        .y_label_formatter(&|y| format!("{y:.4}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(|e| plot_err(path, e))?;
    for (i, p) in points.iter().enumerate() {
        if !(p.x.is_finite() && p.y.is_finite()) {
            continue;
        }
        let c = color(i);
        chart
            .draw_series(std::iter::once(Circle::new((p.x, p.y), 7, c.filled())))
            .map_err(|e| plot_err(path, e))?
            .label(p.label.clone())
            .legend(move |(x, y)| Circle::new((x + 10, y), 6, c.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))?;
    Ok(())
}

/// What [`fill`] needs besides the chart and the data.
struct Axes<'a> {
    path: &'a Path,
    x_label: &'a str,
    y_label: &'a str,
    x_range: (f64, f64),
}

/// Mesh, bands, lines, reference lines and legend on a built chart (linear
/// or logarithmic y).
fn fill<'b, Y>(
    mut chart: ChartContext<'b, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, Y>>,
    axes: &Axes<'_>,
    series: &[Series],
    hline: Option<(f64, &str)>,
    y_format: &dyn Fn(&f64) -> String,
) -> Result<()>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let path = axes.path;
    let (x0, x1) = axes.x_range;
    chart
        .configure_mesh()
        .x_desc(axes.x_label)
        .x_label_formatter(&|x| {
            if (x1 - x0) >= 10.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.2}")
            }
        })
        .y_desc(axes.y_label)
        .y_label_formatter(y_format)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(|e| plot_err(path, e))?;
    for (i, s) in series.iter().enumerate() {
        let c = color(i);
        // The band, one polygon per run of finite points.
        for seg in segments(&s.x, &s.min, &s.max) {
            let mut pts: Vec<(f64, f64)> = seg.iter().map(|&(x, lo, _)| (x, lo)).collect();
            pts.extend(seg.iter().rev().map(|&(x, _, hi)| (x, hi)));
            chart
                .draw_series(std::iter::once(Polygon::new(pts, c.mix(0.18).filled())))
                .map_err(|e| plot_err(path, e))?;
        }
        let mut first = true;
        for seg in segments(&s.x, &s.mean, &s.mean) {
            let line = chart
                .draw_series(LineSeries::new(
                    seg.iter().map(|&(x, m, _)| (x, m)),
                    c.stroke_width(2),
                ))
                .map_err(|e| plot_err(path, e))?;
            if first {
                line.label(s.label.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                });
                first = false;
            }
        }
    }
    // After every curve and band, so nothing hides them.
    draw_limits(&mut chart, axes, series)?;
    if let Some((h, label)) = hline {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x0, h), (x1, h)],
                8,
                5,
                BLACK.stroke_width(1),
            ))
            .map_err(|e| plot_err(path, e))?
            .label(label.to_string())
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| plot_err(path, e))?;
    Ok(())
}

/// The series' limit lines, dashed in their colours, and each distinct
/// value written at the right edge above its line.
fn draw_limits<'b, Y>(
    chart: &mut ChartContext<'b, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, Y>>,
    axes: &Axes<'_>,
    series: &[Series],
) -> Result<()>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let path = axes.path;
    let (x0, x1) = axes.x_range;
    let width_px = chart.plotting_area().dim_in_pixel().0;
    let limits: Vec<(usize, &LimitLine)> = series
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.limit.as_ref().map(|l| (i, l)))
        .filter(|(_, l)| l.value.is_finite())
        .collect();
    for &(i, l) in &limits {
        // The series that share this value, and this one's place among them.
        let same: Vec<usize> = limits
            .iter()
            .filter(|(_, m)| m.value == l.value)
            .map(|&(j, _)| j)
            .collect();
        let k = same.iter().position(|&j| j == i).expect("contains itself");
        let c = color(i);
        let style = c.stroke_width(LIMIT_WIDTH);
        chart
            .draw_series(
                dashes(x0, x1, width_px, same.len(), k)
                    .into_iter()
                    .map(|(a, b)| PathElement::new(vec![(a, l.value), (b, l.value)], style)),
            )
            .map_err(|e| plot_err(path, e))?
            .label(l.label.clone())
            .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 20, y)], 6, 3, style));
        if k == 0 {
            // One label per value: in the series' colour when it is alone.
            let text = if same.len() == 1 { c } else { BLACK };
            let font = ("sans-serif", 14)
                .into_font()
                .color(&text)
                .pos(Pos::new(HPos::Right, VPos::Bottom));
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((x1, l.value))
                        + Text::new(format!("{}", l.value), (-6, -4), font),
                ))
                .map_err(|e| plot_err(path, e))?;
        }
    }
    Ok(())
}

/// The dashes of member `k` of `n` limit lines at one value, as x intervals
/// over [x0, x1] drawn `width_px` pixels wide: the n lines take turns, each
/// drawing a [`DASH_PX`] dash in every period of n·([`DASH_PX`] + [`GAP_PX`])
/// pixels, member k at offset k·([`DASH_PX`] + [`GAP_PX`]).
fn dashes(x0: f64, x1: f64, width_px: u32, n: usize, k: usize) -> Vec<(f64, f64)> {
    let step = DASH_PX + GAP_PX;
    let period = step * n.max(1) as u32;
    let per_px = (x1 - x0) / f64::from(width_px.max(1));
    let mut out = Vec::new();
    let mut start = step * k as u32;
    while start < width_px {
        let end = (start + DASH_PX).min(width_px);
        out.push((x0 + f64::from(start) * per_px, x0 + f64::from(end) * per_px));
        start += period;
    }
    out
}

/// Maximal runs of points where x, a and b are all finite.
fn segments(x: &[f64], a: &[f64], b: &[f64]) -> Vec<Vec<(f64, f64, f64)>> {
    let mut out = vec![Vec::new()];
    for ((&x, &a), &b) in x.iter().zip(a).zip(b) {
        if x.is_finite() && a.is_finite() && b.is_finite() {
            out.last_mut().expect("never empty").push((x, a, b));
        } else if !out.last().expect("never empty").is_empty() {
            out.push(Vec::new());
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A series through `(x, mean)` without a band.
    fn series(label: &str, mean: Vec<f64>, limit: Option<f64>) -> Series {
        Series {
            label: label.into(),
            x: (0..mean.len()).map(|i| i as f64).collect(),
            min: mean.clone(),
            max: mean.clone(),
            mean,
            limit: limit.map(|value| LimitLine {
                value,
                label: format!("{label}: limit {value}"),
            }),
        }
    }

    /// Per pixel row, how many pixels have exactly colour `c`.
    fn rows_of(buf: &[u8], c: RGBColor) -> Vec<usize> {
        buf.chunks(3 * SIZE.0 as usize)
            .map(|row| {
                row.chunks(3)
                    .filter(|p| p[0] == c.0 && p[1] == c.1 && p[2] == c.2)
                    .count()
            })
            .collect()
    }

    #[test]
    fn dashes_of_lines_sharing_a_value_take_turns() {
        // Alone: a dash every DASH_PX + GAP_PX pixels from the left edge.
        let d = dashes(0.0, 100.0, 100, 1, 0);
        assert_eq!(d[0], (0.0, 14.0));
        assert_eq!(d[1], (19.0, 33.0));
        assert_eq!(d.last(), Some(&(95.0, 100.0)));
        // Two at one value: the second starts where the first's gap starts
        // and both repeat every 38 px, so they never overlap.
        let a = dashes(0.0, 200.0, 100, 2, 0);
        let b = dashes(0.0, 200.0, 100, 2, 1);
        assert_eq!(&a[..2], &[(0.0, 28.0), (76.0, 104.0)]);
        assert_eq!(&b[..2], &[(38.0, 66.0), (114.0, 142.0)]);
        assert!(a
            .iter()
            .all(|&(s, e)| b.iter().all(|&(t, f)| e <= t || f <= s)));
    }

    #[test]
    fn limit_lines_are_drawn_dashed_in_their_colours_on_top_of_the_curves() {
        let rising = |lo: f64, hi: f64| -> Vec<f64> {
            (0..50)
                .map(|i| lo * (hi / lo).powf(i as f64 / 49.0))
                .collect()
        };
        // Blue and orange share the limit 0.01, and orange's curve runs
        // along it (as a trust region's KL does); green's limit is 0.1.
        let series = [
            series("a", rising(1e-4, 1e-1), Some(0.01)),
            series("b", vec![0.01; 50], Some(0.01)),
            series("c", rising(2e-4, 5e-2), Some(0.1)),
        ];
        let mut buf = vec![0u8; 3 * (SIZE.0 * SIZE.1) as usize];
        let labels = Labels {
            title: "kl",
            x_label: "update",
            y_label: "KL",
        };
        render(
            BitMapBackend::with_buffer(&mut buf, SIZE),
            Path::new("kl.png"),
            &labels,
            &series,
            None,
            true,
        )
        .unwrap();
        let (blue, orange, green) = (
            rows_of(&buf, color(0)),
            rows_of(&buf, color(1)),
            rows_of(&buf, color(2)),
        );
        // A dashed line across the plot: hundreds of pixels in one row, not
        // the whole width. Only the limit lines give rows like that.
        let line = |counts: &[usize]| -> Vec<usize> {
            (0..counts.len()).filter(|&r| counts[r] >= 200).collect()
        };
        let (b, g) = (line(&blue), line(&green));
        assert!(
            (2..=4).contains(&b.len()),
            "blue limit rows {b:?} (3 px wide)"
        );
        assert!((2..=4).contains(&g.len()), "green limit rows {g:?}");
        // Blue's dashes are not hidden by orange's curve nor by orange's
        // own dashes at the same value: both colours share those rows.
        for &r in &b {
            assert!(blue[r] < 600, "row {r} is solid blue: {}", blue[r]);
            assert!(orange[r] >= 200, "row {r}: orange {}", orange[r]);
        }
        // 0.1 is drawn above 0.01, a decade higher on the log axis.
        assert!(g[0] + 50 < b[0], "green {g:?} blue {b:?}");
    }

    #[test]
    fn a_log_plot_with_limits_is_written_as_png() {
        let dir = std::env::temp_dir().join(format!("klrl-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kl.png");
        let s = series("a", vec![0.0, 1e-3, 2e-2, f64::NAN, 5e-3], Some(0.01));
        draw_log_y(&path, "kl", "update", "KL", &[s], None).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn segments_split_at_nan() {
        let n = f64::NAN;
        let s = segments(
            &[0.0, 1.0, 2.0, 3.0, 4.0],
            &[n, 1.0, 2.0, n, 4.0],
            &[0.0; 5],
        );
        assert_eq!(
            s,
            vec![
                vec![(1.0, 1.0, 0.0), (2.0, 2.0, 0.0)],
                vec![(4.0, 4.0, 0.0)]
            ]
        );
    }
}
