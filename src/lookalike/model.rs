//! L2-regularised logistic regression over sparse binary features, fitted with L-BFGS (written
//! here: the rows are short lists of feature ids, a few dozen per user, and a dense design
//! matrix — what `linfa-logistic` takes — would hold tens of millions of zeros at a 50k-row
//! sample; one pass over the sparse rows computes the loss and the gradient exactly), and the
//! rank AUC of a scored sample.

/// What a fit returns: one weight per feature and the intercept.
#[derive(Debug, Clone)]
pub struct Fit {
    pub weights: Vec<f64>,
    pub bias: f64,
    pub iterations: usize,
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// log(1 + e^z), without overflow.
fn softplus(z: f64) -> f64 {
    if z > 30.0 {
        z
    } else if z < -30.0 {
        z.exp()
    } else {
        z.exp().ln_1p()
    }
}

/// Mean log-loss + (λ/2)·|w|² and its gradient at `x` (weights, then the unpenalised
/// intercept last).
fn loss_grad(rows: &[Vec<u32>], y: &[bool], lambda: f64, x: &[f64], g: &mut [f64]) -> f64 {
    let d = x.len() - 1;
    let n = rows.len() as f64;
    g.iter_mut().for_each(|v| *v = 0.0);
    let mut loss = 0.0;
    for (r, &yi) in rows.iter().zip(y) {
        let z = x[d] + r.iter().map(|&j| x[j as usize]).sum::<f64>();
        loss += if yi { softplus(-z) } else { softplus(z) };
        let e = sigmoid(z) - if yi { 1.0 } else { 0.0 };
        for &j in r {
            g[j as usize] += e;
        }
        g[d] += e;
    }
    loss /= n;
    for v in g.iter_mut() {
        *v /= n;
    }
    for j in 0..d {
        loss += 0.5 * lambda * x[j] * x[j];
        g[j] += lambda * x[j];
    }
    loss
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Fit on `rows` (the feature ids each example has, below `d`) with labels `y`.
pub fn fit(rows: &[Vec<u32>], y: &[bool], d: usize, lambda: f64) -> Fit {
    const MEMORY: usize = 10;
    const MAX_ITER: usize = 300;
    let dim = d + 1;
    let mut x = vec![0.0; dim];
    let mut g = vec![0.0; dim];
    let mut f = loss_grad(rows, y, lambda, &x, &mut g);
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let mut iterations = 0;
    let mut g_new = vec![0.0; dim];
    for it in 0..MAX_ITER {
        iterations = it + 1;
        // (Written so that a NaN gradient stops too.)
        if !g.iter().all(|v| v.abs() >= 0.0) || g.iter().all(|v| v.abs() < 1e-6) {
            break;
        }
        // Two-loop recursion: the direction −H·g.
        let mut q = g.clone();
        let k = s_hist.len();
        let mut alpha = vec![0.0; k];
        for i in (0..k).rev() {
            let rho = 1.0 / dot(&y_hist[i], &s_hist[i]);
            alpha[i] = rho * dot(&s_hist[i], &q);
            for (qj, yj) in q.iter_mut().zip(&y_hist[i]) {
                *qj -= alpha[i] * yj;
            }
        }
        let gamma = if k > 0 {
            dot(&s_hist[k - 1], &y_hist[k - 1]) / dot(&y_hist[k - 1], &y_hist[k - 1])
        } else {
            1.0
        };
        for v in q.iter_mut() {
            *v *= gamma;
        }
        for i in 0..k {
            let rho = 1.0 / dot(&y_hist[i], &s_hist[i]);
            let beta = rho * dot(&y_hist[i], &q);
            for (qj, sj) in q.iter_mut().zip(&s_hist[i]) {
                *qj += (alpha[i] - beta) * sj;
            }
        }
        let dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let slope = dot(&g, &dir);
        let dir = if slope >= 0.0 {
            // Not a descent direction: start over along the gradient.
            s_hist.clear();
            y_hist.clear();
            g.iter().map(|v| -v).collect::<Vec<f64>>()
        } else {
            dir
        };
        let slope = dot(&g, &dir);
        // Backtracking (Armijo).
        let mut step = 1.0;
        let mut x_new = vec![0.0; dim];
        let mut f_new;
        loop {
            for j in 0..dim {
                x_new[j] = x[j] + step * dir[j];
            }
            f_new = loss_grad(rows, y, lambda, &x_new, &mut g_new);
            if (f_new.is_finite() && f_new <= f + 1e-4 * step * slope) || step < 1e-10 {
                break;
            }
            step *= 0.5;
        }
        if !(f_new.is_finite() && f_new <= f) {
            // No step decreases the loss: this is as good as it gets.
            break;
        }
        let s: Vec<f64> = (0..dim).map(|j| x_new[j] - x[j]).collect();
        let yv: Vec<f64> = (0..dim).map(|j| g_new[j] - g[j]).collect();
        let converged = (f - f_new).abs() <= 1e-10 * f.abs().max(1.0);
        if dot(&s, &yv) > 1e-12 {
            s_hist.push(s);
            y_hist.push(yv);
            if s_hist.len() > MEMORY {
                s_hist.remove(0);
                y_hist.remove(0);
            }
        }
        x = x_new.clone();
        g.copy_from_slice(&g_new);
        f = f_new;
        if converged {
            break;
        }
    }
    Fit {
        bias: x[d],
        weights: x[..d].to_vec(),
        iterations,
    }
}

/// The probability of the positive class for one row.
pub fn predict(fit: &Fit, row: &[u32]) -> f64 {
    sigmoid(fit.bias + row.iter().map(|&j| fit.weights[j as usize]).sum::<f64>())
}

/// The area under the ROC curve of `positives` against `negatives` (scores), counting a tie
/// as half: the chance that a random positive outscores a random negative. `None` when either
/// side is empty.
pub fn auc(positives: &[f64], negatives: &[f64]) -> Option<f64> {
    if positives.is_empty() || negatives.is_empty() {
        return None;
    }
    let mut all: Vec<(f64, bool)> = positives
        .iter()
        .map(|s| (*s, true))
        .chain(negatives.iter().map(|s| (*s, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Mid-ranks of tied scores.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mid * all[i..=j].iter().filter(|x| x.1).count() as f64;
        i = j + 1;
    }
    let (p, n) = (positives.len() as f64, negatives.len() as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_pairs_and_ties() {
        assert_eq!(auc(&[0.9, 0.8], &[0.1, 0.2]), Some(1.0));
        assert_eq!(auc(&[0.1], &[0.9]), Some(0.0));
        assert_eq!(auc(&[0.5], &[0.5]), Some(0.5));
        // 3 of 4 pairs won.
        assert_eq!(auc(&[0.9, 0.3], &[0.5, 0.1]), Some(0.75));
        assert_eq!(auc(&[], &[0.1]), None);
    }

    /// The fit reaches the optimum: the gradient vanishes, so the fitted rates match what the
    /// closed form gives for one binary feature (logit of each group's rate, shrunk by λ).
    #[test]
    fn one_feature_recovers_group_rates() {
        // Feature 0 present: 30 of 40 positive; absent: 10 of 60 positive.
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for i in 0..40 {
            rows.push(vec![0]);
            y.push(i < 30);
        }
        for i in 0..60 {
            rows.push(vec![]);
            y.push(i < 10);
        }
        let f = fit(&rows, &y, 1, 0.0);
        assert!((predict(&f, &[0]) - 0.75).abs() < 1e-5, "{f:?}");
        assert!((predict(&f, &[]) - 10.0 / 60.0).abs() < 1e-5, "{f:?}");
        // With a penalty the weight shrinks toward 0, the intercept is not penalised.
        let g = fit(&rows, &y, 1, 0.1);
        assert!(g.weights[0] > 0.0 && g.weights[0] < f.weights[0]);
    }
}
