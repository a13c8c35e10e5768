//! The MLP's linearisation on host memory (CPU networks): the detached
//! forward pass, `J v` and `Jᵀ u` of [`crate::MlpLinearization`] computed by
//! [`crate::host`]'s matrix products and fused element-wise passes. The
//! recurrences are those documented on [`crate::MlpLinearization`]; every
//! operation is the one the tensor implementation does, in the same order,
//! so the results are the same bits.

use crate::host::{matmul, matmul_into, HostFloat, View};
use crate::mlp::Activation;

/// One layer's parameters (or a tangent / gradient of them) on the host:
/// `w [out, in]` row-major and `b [out]`.
#[derive(Debug, Clone)]
pub(crate) struct HostLayer<T> {
    pub w: Vec<T>,
    pub b: Vec<T>,
}

impl<T> HostLayer<T> {
    /// A flat vector in layer order (each layer's `w` row-major, then `b`)
    /// for layers of widths `sizes`, split into layers, each entry mapped by
    /// `f`.
    pub fn split<S: Copy>(sizes: &[usize], flat: &[S], f: impl Fn(S) -> T) -> Vec<Self> {
        let mut rest = flat;
        sizes
            .windows(2)
            .map(|w| {
                let (wk, r) = rest.split_at(w[0] * w[1]);
                let (bk, r) = r.split_at(w[1]);
                rest = r;
                HostLayer {
                    w: wk.iter().map(|&x| f(x)).collect(),
                    b: bk.iter().map(|&x| f(x)).collect(),
                }
            })
            .collect()
    }
}

/// The linearisation of an MLP at fixed parameters and inputs.
#[derive(Debug, Clone)]
pub(crate) struct HostLinearization<T> {
    /// Widths: `sizes[0]` the input, `sizes[l + 1]` the output of layer l.
    pub sizes: Vec<usize>,
    /// Rows N.
    pub n: usize,
    /// `(W_l, b_l)` copied at linearisation time.
    pub layers: Vec<HostLayer<T>>,
    /// Input of each layer, `[N, sizes[l]]`: `h_0 = x`, `h_l = σ(z_l)`.
    pub inputs: Vec<Vec<T>>,
    /// `σ'(z_l)` of each hidden layer, `[N, sizes[l + 1]]`.
    pub dact: Vec<Vec<T>>,
}

impl<T: HostFloat> HostLinearization<T> {
    /// The forward pass at `x [N, sizes[0]]`: returns the output `[N, out]`
    /// and the linearisation (each layer by [`layer_forward`]).
    pub fn new(
        x: Vec<T>,
        n: usize,
        layers: Vec<HostLayer<T>>,
        activation: Activation,
    ) -> (Vec<T>, Self) {
        let mut sizes = vec![x.len() / n.max(1)];
        sizes.extend(layers.iter().map(|l| l.b.len()));
        let last = layers.len() - 1;
        let mut inputs = Vec::with_capacity(layers.len());
        let mut dact = Vec::with_capacity(last);
        let mut h = x;
        for (l, layer) in layers.iter().enumerate() {
            let (z, d) =
                layer_forward(&h, n, &layer.w, &layer.b, hidden(l, last, activation), true);
            inputs.push(h);
            dact.extend(d);
            h = z;
        }
        (
            h,
            HostLinearization {
                sizes,
                n,
                layers,
                inputs,
                dact,
            },
        )
    }

    /// `J v` for the parameter tangent `t` (one [`HostLayer`] per layer):
    /// `dz_l = (dh_{l−1} W_lᵀ) + ((h_{l−1} dW_lᵀ) + db_l)`, `dh_l = dz_l ⊙ σ'_l`.
    /// Returns `dz` of the head `[N, out]` and the tangent of the head's
    /// input (`None` without a hidden layer).
    pub fn jvp(&self, t: &[HostLayer<T>]) -> (Vec<T>, Option<Vec<T>>) {
        let (n, last) = (self.n, self.layers.len() - 1);
        let mut d: Option<Vec<T>> = None;
        let mut d_features = None;
        for (l, (layer, tl)) in self.layers.iter().zip(t).enumerate() {
            let (fan_in, out) = (self.sizes[l], self.sizes[l + 1]);
            let mut dz = matmul(
                View::new(&self.inputs[l], n, fan_in),
                View::new(&tl.w, out, fan_in).t(),
            );
            add_bias(&mut dz, &tl.b);
            if let Some(dh) = d.take() {
                let through = matmul(
                    View::new(&dh, n, fan_in),
                    View::new(&layer.w, out, fan_in).t(),
                );
                for (z, p) in dz.iter_mut().zip(&through) {
                    *z = *p + *z;
                }
                if l == last {
                    d_features = Some(dh);
                }
            }
            if l < last {
                for (z, a) in dz.iter_mut().zip(&self.dact[l]) {
                    *z *= *a;
                }
            }
            d = Some(dz);
        }
        (d.unwrap_or_default(), d_features)
    }

    /// `Jᵀ u + J_zᵀ g` for the output cotangent `u [N, out]` and an optional
    /// cotangent `g [N, features]` at the head's input: from the head down,
    /// `∂W_l = δ_lᵀ h_{l−1}`, `∂b_l = 1ᵀ δ_l` (a `[1, N]` product, as the
    /// tensor path), `δ_{l−1} = ((δ_l W_l) + g) ⊙ σ'_{l−1}`. Returns the
    /// gradients in layer order.
    pub fn vjp(&self, u: Vec<T>, g: Option<&[T]>) -> Vec<HostLayer<T>> {
        let mut flat = vec![T::ZERO; self.num_params()];
        self.vjp_into(u, g, &mut flat);
        HostLayer::split(&self.sizes, &flat, |x| x)
    }

    /// The number of parameters: Σ_l (in_l · out_l + out_l).
    pub fn num_params(&self) -> usize {
        self.sizes.windows(2).map(|w| w[0] * w[1] + w[1]).sum()
    }

    /// [`HostLinearization::vjp`] written into `out` as one flat vector
    /// (each layer's `∂W_l` row-major, then `∂b_l`, in layer order; exactly
    /// [`HostLinearization::num_params`] entries): every product goes
    /// straight into its place, with no per-layer vector.
    ///
    /// # Panics
    /// If `out` does not hold [`HostLinearization::num_params`] entries.
    pub fn vjp_into(&self, u: Vec<T>, g: Option<&[T]>, out: &mut [T]) {
        assert_eq!(out.len(), self.num_params(), "host vjp: gradient length");
        let (n, last) = (self.n, self.layers.len() - 1);
        let ones = vec![T::ONE; n];
        let mut delta = u;
        let mut end = out.len();
        for l in (0..self.layers.len()).rev() {
            let (fan_in, width) = (self.sizes[l], self.sizes[l + 1]);
            let (rest, b_out) = out[..end].split_at_mut(end - width);
            let w_start = rest.len() - width * fan_in;
            let w_out = &mut rest[w_start..];
            end = w_start;
            let delta_v = View::new(&delta, n, width);
            matmul_into(delta_v.t(), View::new(&self.inputs[l], n, fan_in), w_out);
            matmul_into(View::new(&ones, 1, n), delta_v, b_out);
            if l > 0 {
                let mut back = matmul(delta_v, View::new(&self.layers[l].w, width, fan_in));
                if let (true, Some(g)) = (l == last, g) {
                    for (x, y) in back.iter_mut().zip(g) {
                        *x += *y;
                    }
                }
                for (x, a) in back.iter_mut().zip(&self.dact[l - 1]) {
                    *x *= *a;
                }
                delta = back;
            }
        }
    }
}

/// The forward pass alone at `x [n, in]` through `layers` (`(W, b)` as
/// stored, no copy): the output and, with `keep_features`, the head's input.
/// The same operations as [`HostLinearization::new`], without keeping what
/// the derivatives need.
pub(crate) fn forward<T: HostFloat>(
    x: Vec<T>,
    n: usize,
    layers: &[(&[T], &[T])],
    activation: Activation,
    keep_features: bool,
) -> (Vec<T>, Option<Vec<T>>) {
    let last = layers.len() - 1;
    let mut h = x;
    let mut features = None;
    for (l, (w, b)) in layers.iter().enumerate() {
        let (z, _) = layer_forward(&h, n, w, b, hidden(l, last, activation), false);
        if l == last && keep_features {
            features = Some(h);
        }
        h = z;
    }
    (h, features)
}

/// The activation after layer `l` of `last + 1`: none after the head.
fn hidden(l: usize, last: usize, activation: Activation) -> Option<Activation> {
    (l < last).then_some(activation)
}

/// One layer at `h [n, in]`: `z = h Wᵀ`, then in one pass `z + b` and, for
/// a hidden layer, `σ(z + b)` and (with `want_dact`) `σ'`: `1 − h²` for
/// tanh (candle's `sqr` then `affine(−1, 1)`), `[z ≥ 0]` for relu (candle's
/// convention).
fn layer_forward<T: HostFloat>(
    h: &[T],
    n: usize,
    w: &[T],
    b: &[T],
    activation: Option<Activation>,
    want_dact: bool,
) -> (Vec<T>, Option<Vec<T>>) {
    let out = b.len();
    let fan_in = w.len().checked_div(out).unwrap_or(0);
    let mut z = matmul(View::new(h, n, fan_in), View::new(w, out, fan_in).t());
    add_bias(&mut z, b);
    let dact = match activation {
        Some(a) => activate_in_place(&mut z, a, want_dact),
        None => None,
    };
    (z, dact)
}

/// `z[r, j] += b[j]` for every row r.
fn add_bias<T: HostFloat>(z: &mut [T], b: &[T]) {
    if b.is_empty() {
        return;
    }
    for row in z.chunks_exact_mut(b.len()) {
        for (x, &c) in row.iter_mut().zip(b) {
            *x += c;
        }
    }
}

/// `z ← σ(z)`; returns `σ'(z)` when asked for (see [`layer_forward`]).
fn activate_in_place<T: HostFloat>(
    z: &mut [T],
    activation: Activation,
    want_dact: bool,
) -> Option<Vec<T>> {
    match activation {
        Activation::Tanh => {
            T::tanh_in_place(z);
            want_dact.then(|| {
                z.iter()
                    .map(|&a| a * a * T::narrow(-1.0) + T::ONE)
                    .collect()
            })
        }
        Activation::Relu => {
            let d = want_dact.then(|| {
                z.iter()
                    .map(|&x| if x >= T::ZERO { T::ONE } else { T::ZERO })
                    .collect()
            });
            for x in z.iter_mut() {
                *x = x.relu();
            }
            d
        }
    }
}
