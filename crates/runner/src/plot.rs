//! PNG plots of a comparison, drawn with plotters' bitmap backend. Text is
//! rendered with the embedded DejaVu Sans Mono font (Bitstream Vera licence,
//! `assets/DejaVuSansMono-LICENSE.txt`) through plotters' `ab_glyph`
//! feature, so no system font library is needed.

use std::path::Path;

use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
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
    /// A horizontal reference line drawn in the series' colour (the KL
    /// target or max_kl), if any.
    pub limit: Option<f64>,
}

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

fn draw_scaled(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    hline: Option<(f64, &str)>,
    log_y: bool,
) -> Result<()> {
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
            limit: s.limit.map(clamp),
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
    ys.extend(series.iter().filter_map(|s| s.limit));
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

    let root = BitMapBackend::new(path, (1000, 620)).into_drawing_area();
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
        if let Some(l) = s.limit {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(x0, l), (x1, l)],
                    8,
                    5,
                    c.stroke_width(1),
                ))
                .map_err(|e| plot_err(path, e))?
                .label(format!("{} limit {l}", s.label))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(1))
                });
        }
    }
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
