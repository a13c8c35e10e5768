//! The KL toolbox (`klrl::kl`) on the classic examples:
//!
//! 1. a fair die against loaded ones, both directions, in bits and nats
//!    (KL is not symmetric, and is infinite where Q rules out what P allows);
//! 2. the click histograms of two A/B-test groups over result positions;
//! 3. KL between Gaussians in both directions (closed form);
//! 4. forward against reverse KL when fitting one Gaussian q = N(μ, σ²) to a
//!    two-peaked mixture p: the forward fit, argmin KL(p ‖ q), covers both
//!    modes (for a Gaussian family it matches p's mean and variance), the
//!    reverse fit, argmin KL(q ‖ p), locks onto one mode (Bishop, *Pattern
//!    Recognition and Machine Learning*, §10.1.2, Fig. 10.3; Murphy,
//!    *Machine Learning: A Probabilistic Perspective*, §21.2.2). Both are
//!    minimised numerically: KL by summation on a fine grid of x (the grid
//!    masses of p and q handed to [`klrl::kl::kl_divergence`]), then a grid
//!    search over (μ, log σ) refined twice around the best point.
//!
//! Run from the workspace root:
//!
//! ```text
//! cargo run --release --example kl_basics [-- OUT_DIR]
//! ```
//!
//! It prints the numbers of each part and draws the mixture with both fits to
//! `OUT_DIR/forward_vs_reverse.png` (default `docs/kl_basics/`). About two
//! seconds; `KLRL_EXAMPLE_QUICK=1` uses coarser grids (a fraction of a second).
//! Expected: the forward fit sits between the peaks with σ ≈ 2.09 (the
//! moment-matched values are printed beside it), the reverse fit on the
//! heavier peak at x ≈ 2 with σ ≈ 0.8; the last line is `done: …`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use klrl::kl::{kl_divergence, univariate_kl, Base, DiscreteComparison};
use plotters::prelude::*;
use plotters::style::FontStyle;

/// The font the plot's text is drawn with (plotters' `ab_glyph` backend needs
/// one; this is the one `klrl compare` embeds).
static FONT: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crates/runner/assets/DejaVuSansMono.ttf"
));

/// The two-peaked target: (weight, mean, standard deviation) per component.
const MIXTURE: [(f64, f64, f64); 2] = [(0.4, -2.0, 0.6), (0.6, 2.0, 0.8)];

fn main() -> Result<()> {
    let quick = std::env::var("KLRL_EXAMPLE_QUICK").is_ok_and(|v| v == "1");
    let out = std::env::args_os().nth(1).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/kl_basics"),
        PathBuf::from,
    );

    dice()?;
    ab_test()?;
    gaussians()?;

    println!("\n## 4. Fitting N(μ, σ²) to a mixture: forward vs reverse KL");
    // Wide enough that q's tails beyond it are negligible (a truncated q
    // would bias the fitted σ upwards).
    let grid = Grid::new(-12.0, 12.0, if quick { 1201 } else { 6001 });
    let p: Vec<f64> = grid.x.iter().map(|&x| mixture_pdf(x)).collect();
    let steps = if quick { 25 } else { 61 };
    let forward = fit(&grid, &p, Direction::Forward, (-4.0, 4.0), steps)?;
    let reverse = fit(&grid, &p, Direction::Reverse, (-4.0, 4.0), steps)?;
    // Reverse KL has a second local minimum on the other peak: search μ < −1.
    let reverse_left = fit(&grid, &p, Direction::Reverse, (-4.0, -1.0), steps)?;
    let (mean, sd) = mixture_moments();
    println!("p = 0.4·N(−2, 0.6²) + 0.6·N(2, 0.8²); mean {mean:.3}, sd {sd:.3}");
    println!(
        "forward fit: mu = {:.3}, sigma = {:.3}, KL(p ‖ q) = {:.4} nats \
         (moment matching gives mu = {mean:.3}, sigma = {sd:.3})",
        forward.mu, forward.sigma, forward.kl
    );
    println!(
        "reverse fit: mu = {:.3}, sigma = {:.3}, KL(q ‖ p) = {:.4} nats",
        reverse.mu, reverse.sigma, reverse.kl
    );
    println!(
        "reverse KL's other local minimum: mu = {:.3}, sigma = {:.3}, KL(q ‖ p) = {:.4} nats",
        reverse_left.mu, reverse_left.sigma, reverse_left.kl
    );
    println!(
        "forward KL covers both modes (σ {:.2}); reverse KL picks one (σ {:.2})",
        forward.sigma, reverse.sigma
    );

    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let png = out.join("forward_vs_reverse.png");
    plot(&png, &grid, &p, &[forward, reverse, reverse_left])
        .with_context(|| format!("drawing {}", png.display()))?;
    println!("plot: {}", png.display());
    println!(
        "done: forward sigma {:.3} > reverse sigma {:.3}",
        forward.sigma, reverse.sigma
    );
    Ok(())
}

/// Part 1: a fair die against loaded ones.
fn dice() -> Result<()> {
    println!("## 1. A fair die against loaded dice");
    let fair = [1.0; 6]; // weights; the toolbox normalises them
    let dice: [(&str, [f64; 6]); 3] = [
        (
            "slightly loaded (six 1/4)",
            [0.15, 0.15, 0.15, 0.15, 0.15, 0.25],
        ),
        ("loaded (six 1/2)", [0.1, 0.1, 0.1, 0.1, 0.1, 0.5]),
        ("no ones (one never shows)", [0.0, 0.2, 0.2, 0.2, 0.2, 0.2]),
    ];
    for (name, die) in dice {
        let nats = DiscreteComparison::new(&fair, &die, Base::Nats)?;
        let bits = DiscreteComparison::new(&fair, &die, Base::Bits)?;
        println!(
            "KL(fair ‖ {name}) = {:.4} nats = {:.4} bits; KL({name} ‖ fair) = {:.4} nats = {:.4} bits",
            nats.kl_pq, bits.kl_pq, nats.kl_qp, bits.kl_qp
        );
    }
    println!(
        "(infinite: the fair die rolls ones, which the other die rules out; the other \
         direction stays finite)"
    );
    Ok(())
}

/// Part 2: how differently two A/B-test groups click over result positions.
fn ab_test() -> Result<()> {
    println!("\n## 2. A/B test: clicks by result position (1–5)");
    let a = [420.0, 210.0, 130.0, 90.0, 50.0];
    let b = [350.0, 240.0, 170.0, 120.0, 70.0];
    let c = DiscreteComparison::new(&a, &b, Base::Bits)?;
    let share = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{:.3}", x))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("group A click share: {}", share(&c.p));
    println!("group B click share: {}", share(&c.q));
    let (i, term) = c.largest_term_pq();
    println!(
        "KL(A ‖ B) = {:.4} bits, KL(B ‖ A) = {:.4} bits, JS = {:.4} bits; \
         largest term of KL(A ‖ B): position {} ({term:.4} bits)",
        c.kl_pq,
        c.kl_qp,
        c.js,
        i + 1
    );
    Ok(())
}

/// Part 3: Gaussian KL both ways.
fn gaussians() -> Result<()> {
    println!("\n## 3. Gaussians: KL(N(0, 1) ‖ N(1, 2²)) and back");
    let pq = univariate_kl(0.0, 1.0, 1.0, 2.0)?;
    let qp = univariate_kl(1.0, 2.0, 0.0, 1.0)?;
    println!(
        "KL(N(0,1) ‖ N(1,2²)) = {pq:.4} nats; KL(N(1,2²) ‖ N(0,1)) = {qp:.4} nats \
         (closed form: ln(σq/σp) + (σp² + (μp−μq)²)/(2σq²) − ½)"
    );
    Ok(())
}

/// An evenly spaced grid of x values.
struct Grid {
    x: Vec<f64>,
}

impl Grid {
    fn new(lo: f64, hi: f64, n: usize) -> Self {
        let dx = (hi - lo) / (n - 1) as f64;
        Grid {
            x: (0..n).map(|i| lo + i as f64 * dx).collect(),
        }
    }
}

fn normal_pdf(x: f64, mu: f64, sigma: f64) -> f64 {
    let z = (x - mu) / sigma;
    (-0.5 * z * z).exp() / (sigma * (2.0 * std::f64::consts::PI).sqrt())
}

fn mixture_pdf(x: f64) -> f64 {
    MIXTURE
        .iter()
        .map(|&(w, mu, sigma)| w * normal_pdf(x, mu, sigma))
        .sum()
}

/// Mean and standard deviation of the mixture: Σ wₖμₖ and
/// √(Σ wₖ(σₖ² + μₖ²) − mean²). The forward-KL fit must match them.
fn mixture_moments() -> (f64, f64) {
    let mean: f64 = MIXTURE.iter().map(|&(w, mu, _)| w * mu).sum();
    let second: f64 = MIXTURE
        .iter()
        .map(|&(w, mu, s)| w * (s * s + mu * mu))
        .sum();
    (mean, (second - mean * mean).sqrt())
}

#[derive(Clone, Copy)]
enum Direction {
    /// KL(p ‖ q): mass-covering.
    Forward,
    /// KL(q ‖ p): mode-seeking.
    Reverse,
}

/// A fitted Gaussian and its divergence.
#[derive(Clone, Copy)]
struct Fit {
    mu: f64,
    sigma: f64,
    kl: f64,
}

/// KL between p and N(μ, σ²) on the grid, in the given direction. The grid
/// masses p(xᵢ)Δx and q(xᵢ)Δx are normalised by `kl_divergence`, so this is
/// the KL of the two distributions restricted to the grid.
fn grid_kl(grid: &Grid, p: &[f64], dir: Direction, mu: f64, sigma: f64) -> Result<f64> {
    let q: Vec<f64> = grid.x.iter().map(|&x| normal_pdf(x, mu, sigma)).collect();
    // A q that underflows to 0 everywhere on the grid is no candidate.
    if q.iter().all(|&v| v == 0.0) {
        return Ok(f64::INFINITY);
    }
    Ok(match dir {
        Direction::Forward => kl_divergence(p, &q)?,
        Direction::Reverse => kl_divergence(&q, p)?,
    })
}

/// Minimise the KL over μ in `mu_range` and log σ in [ln 0.1, ln 5]: a
/// `steps × steps` grid search, then two zoomed grids around the best point.
fn fit(grid: &Grid, p: &[f64], dir: Direction, mu_range: (f64, f64), steps: usize) -> Result<Fit> {
    let (mut mu_lo, mut mu_hi) = mu_range;
    let (mut ls_lo, mut ls_hi) = (0.1f64.ln(), 5.0f64.ln());
    let mut best = Fit {
        mu: f64::NAN,
        sigma: f64::NAN,
        kl: f64::INFINITY,
    };
    for _round in 0..3 {
        let dmu = (mu_hi - mu_lo) / (steps - 1) as f64;
        let dls = (ls_hi - ls_lo) / (steps - 1) as f64;
        for i in 0..steps {
            for j in 0..steps {
                let mu = mu_lo + i as f64 * dmu;
                let sigma = (ls_lo + j as f64 * dls).exp();
                let kl = grid_kl(grid, p, dir, mu, sigma)?;
                if kl < best.kl {
                    best = Fit { mu, sigma, kl };
                }
            }
        }
        // Zoom in: ±2 grid steps around the best point (inside the range).
        let ls = best.sigma.ln();
        (mu_lo, mu_hi) = (
            (best.mu - 2.0 * dmu).max(mu_range.0),
            (best.mu + 2.0 * dmu).min(mu_range.1),
        );
        (ls_lo, ls_hi) = (ls - 2.0 * dls, ls + 2.0 * dls);
    }
    Ok(best)
}

/// The mixture density and the three fits, with title, axis labels and legend.
fn plot(path: &Path, grid: &Grid, p: &[f64], fits: &[Fit; 3]) -> Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| anyhow::anyhow!("the embedded font is invalid"))?;
    let root = BitMapBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    // Every 4th grid point is plenty for smooth curves.
    let x: Vec<f64> = grid
        .x
        .iter()
        .copied()
        .filter(|x| x.abs() <= 6.0)
        .step_by(4)
        .collect();
    let densities: Vec<Vec<f64>> = fits
        .iter()
        .map(|f| x.iter().map(|&x| normal_pdf(x, f.mu, f.sigma)).collect())
        .collect();
    let y_max = p
        .iter()
        .chain(densities.iter().flatten())
        .copied()
        .fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "One Gaussian fitted to a two-peaked p: forward vs reverse KL",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(70)
        .build_cartesian_2d(-6.0..6.0, 0.0..y_max * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("x")
        .y_desc("density")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;
    chart
        .draw_series(std::iter::once(Polygon::new(
            grid.x
                .iter()
                .zip(p)
                .filter(|(x, _)| x.abs() <= 6.0)
                .map(|(&x, &y)| (x, y))
                .chain([(6.0, 0.0), (-6.0, 0.0)])
                .collect::<Vec<_>>(),
            BLACK.mix(0.12).filled(),
        )))?
        .label("p = 0.4·N(−2, 0.6²) + 0.6·N(2, 0.8²)")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], BLACK.mix(0.3).filled()));
    chart.draw_series(LineSeries::new(
        grid.x
            .iter()
            .zip(p)
            .filter(|(x, _)| x.abs() <= 6.0)
            .map(|(&x, &y)| (x, y)),
        BLACK.stroke_width(2),
    ))?;
    let styles = [
        (
            RGBColor(31, 119, 180).mix(1.0),
            "forward KL(p‖q), mode-covering",
            3,
        ),
        (
            RGBColor(214, 39, 40).mix(1.0),
            "reverse KL(q‖p), mode-seeking",
            3,
        ),
        (
            RGBColor(214, 39, 40).mix(0.45),
            "reverse KL, other local min.",
            2,
        ),
    ];
    for ((f, d), (color, name, width)) in fits.iter().zip(&densities).zip(styles) {
        let style = color.stroke_width(width);
        chart
            .draw_series(LineSeries::new(
                x.iter().copied().zip(d.iter().copied()),
                style,
            ))?
            .label(format!("{name}: μ = {:.2}, σ = {:.2}", f.mu, f.sigma))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}
