//! Training curves: the chart of loss and metric per epoch drawn as SVG markup.

use super::num;
use groundwork_store::models::TrainingEpoch;
use std::fmt::Write as _;

/// A coordinate of the chart, rounded for the markup.
fn px(v: f64) -> String {
    format!("{v:.1}")
}

/// Size of a training chart's `viewBox`.
pub const CHART_W: f64 = 560.0;
/// Height of the `viewBox`.
pub const CHART_H: f64 = 240.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 56.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 44.0;

/// A labelled tick of an axis.
pub struct Tick {
    /// Position along the axis (x for the epoch axis, y for the others).
    pub at: String,
    /// Its label.
    pub label: String,
}

/// A point of one of the lines.
pub struct Dot {
    /// x.
    pub x: String,
    /// y.
    pub y: String,
    /// Which line (`train-loss`, `val-loss`, `val-metric`).
    pub series: &'static str,
}

/// A row of the chart's text alternative.
pub struct CurveRow {
    /// Epoch.
    pub epoch: i32,
    /// `frozen` or `fine-tune` (as the trainer names it).
    pub phase: String,
    /// Training loss.
    pub train_loss: String,
    /// Validation loss.
    pub val_loss: String,
    /// Validation metric.
    pub val_metric: String,
}

/// A training run's loss and metric per epoch as an inline SVG chart and a table.
pub struct Chart {
    /// Name of the validation metric (`accuracy`, `miou`, `rmse`, …).
    pub metric: String,
    /// `points` of the training-loss polyline.
    pub train_line: String,
    /// `points` of the validation-loss polyline.
    pub val_line: String,
    /// `points` of the validation-metric polyline.
    pub metric_line: String,
    /// Every point, drawn as a dot (a single epoch has no line).
    pub dots: Vec<Dot>,
    /// Epoch ticks.
    pub x_ticks: Vec<Tick>,
    /// Loss ticks (left axis).
    pub loss_ticks: Vec<Tick>,
    /// Metric ticks (right axis).
    pub metric_ticks: Vec<Tick>,
    /// One sentence about the last epoch (the chart's description).
    pub summary: String,
    /// The text alternative, one row per epoch.
    pub rows: Vec<CurveRow>,
}

/// The smallest of 1, 2, 2.5 and 5 times a power of ten that is at least `v` (> 0).
fn nice(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= v * (1.0 - 1e-9))
        .unwrap_or(10.0 * p)
}

/// An axis from `lo` (0 or below) to at least `max` in four nice steps: `(lo, hi, step)`.
fn axis(lo: f64, max: f64) -> (f64, f64, f64) {
    let span = (max - lo).max(1e-9);
    let step = nice(span / 4.0);
    let lo = (lo / step).floor() * step;
    let step = if lo + 4.0 * step < max {
        nice(step * 1.01)
    } else {
        step
    };
    (lo, lo + 4.0 * step, step)
}

fn ticks(lo: f64, step: f64, to_pos: impl Fn(f64) -> f64) -> Vec<Tick> {
    let decimals = if step.fract().abs() < 1e-9 {
        0
    } else if (step * 10.0).fract().abs() < 1e-9 {
        1
    } else if (step * 100.0).fract().abs() < 1e-9 {
        2
    } else {
        3
    };
    (0..=4)
        .map(|k| {
            let v = lo + step * f64::from(k);
            Tick {
                at: px(to_pos(v)),
                label: format!("{v:.decimals$}"),
            }
        })
        .collect()
}

impl Chart {
    /// The chart of a run's epochs (in the order the API returns them).
    #[must_use]
    pub fn new(epochs: &[TrainingEpoch]) -> Self {
        let metric = epochs
            .iter()
            .rev()
            .map(|e| e.metric.clone())
            .find(|m| !m.is_empty())
            .unwrap_or_else(|| "metric".into());
        let n = epochs.len();
        let (pw, ph) = (CHART_W - LEFT - RIGHT, CHART_H - TOP - BOTTOM);
        #[expect(clippy::cast_precision_loss, reason = "epoch counts")]
        let x = |i: usize| {
            if n > 1 {
                LEFT + pw * i as f64 / (n - 1) as f64
            } else {
                LEFT + pw / 2.0
            }
        };
        let finite = |v: &Option<f64>| v.filter(|v| v.is_finite());
        let loss_max = epochs
            .iter()
            .flat_map(|e| [Some(e.train_loss), e.val_loss])
            .filter_map(|v| finite(&v))
            .fold(0.0_f64, f64::max);
        let (_, loss_hi, loss_step) = axis(0.0, if loss_max > 0.0 { loss_max } else { 1.0 });
        let metrics: Vec<f64> = epochs
            .iter()
            .filter_map(|e| finite(&e.val_metric))
            .collect();
        let m_min = metrics.iter().copied().fold(0.0_f64, f64::min);
        let m_max = metrics.iter().copied().fold(1.0_f64, f64::max);
        let (m_lo, m_hi, m_step) = axis(m_min, m_max);
        let loss_y = |v: f64| TOP + ph * (1.0 - (v / loss_hi).clamp(0.0, 1.0));
        let metric_y = |v: f64| TOP + ph * (1.0 - ((v - m_lo) / (m_hi - m_lo)).clamp(0.0, 1.0));
        let mut lines = [String::new(), String::new(), String::new()];
        let mut dots = Vec::new();
        for (i, e) in epochs.iter().enumerate() {
            let values = [
                (Some(e.train_loss), "train-loss", true),
                (e.val_loss, "val-loss", true),
                (e.val_metric, "val-metric", false),
            ];
            for (k, (v, series, is_loss)) in values.into_iter().enumerate() {
                let Some(v) = finite(&v) else { continue };
                let y = if is_loss { loss_y(v) } else { metric_y(v) };
                let line = &mut lines[k];
                if !line.is_empty() {
                    line.push(' ');
                }
                let _ = write!(line, "{},{}", px(x(i)), px(y));
                dots.push(Dot {
                    x: px(x(i)),
                    y: px(y),
                    series,
                });
            }
        }
        let step = n.div_ceil(10).max(1);
        let x_ticks = epochs
            .iter()
            .enumerate()
            .filter(|(i, _)| i % step == 0 || *i + 1 == n)
            .map(|(i, e)| Tick {
                at: px(x(i)),
                label: e.epoch.to_string(),
            })
            .collect();
        let summary = match epochs.last() {
            None => "No epoch has finished yet.".into(),
            Some(e) => format!(
                "{n} epoch{} recorded; after epoch {}: training loss {}, validation loss {}, validation {metric} {}.",
                if n == 1 { "" } else { "s" },
                e.epoch,
                num(Some(e.train_loss)),
                num(e.val_loss),
                num(e.val_metric),
            ),
        };
        let [train_line, val_line, metric_line] = lines;
        Self {
            train_line,
            val_line,
            metric_line,
            dots,
            x_ticks,
            loss_ticks: ticks(0.0, loss_step, loss_y),
            metric_ticks: ticks(m_lo, m_step, metric_y),
            summary,
            rows: epochs
                .iter()
                .map(|e| CurveRow {
                    epoch: e.epoch,
                    phase: e.phase.clone(),
                    train_loss: num(Some(e.train_loss)),
                    val_loss: num(e.val_loss),
                    val_metric: num(e.val_metric),
                })
                .collect(),
            metric,
        }
    }

    /// x of the plot's left edge.
    #[must_use]
    pub fn left(&self) -> String {
        px(LEFT)
    }

    /// x of the plot's right edge.
    #[must_use]
    pub fn right(&self) -> String {
        px(CHART_W - RIGHT)
    }

    /// y of the plot's top edge.
    #[must_use]
    pub fn top(&self) -> String {
        px(TOP)
    }

    /// y of the plot's bottom edge.
    #[must_use]
    pub fn bottom(&self) -> String {
        px(CHART_H - BOTTOM)
    }

    /// y of the epoch tick labels.
    #[must_use]
    pub fn x_label_y(&self) -> String {
        px(CHART_H - BOTTOM + 16.0)
    }

    /// x of the right axis' tick labels.
    #[must_use]
    pub fn right_label_x(&self) -> String {
        px(CHART_W - RIGHT + 6.0)
    }

    /// x of the left axis' tick labels.
    #[must_use]
    pub fn left_label_x(&self) -> String {
        px(LEFT - 6.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn epoch(epoch: i32, train: f64, val: Option<f64>, metric: Option<f64>) -> TrainingEpoch {
        TrainingEpoch {
            step_id: Uuid::nil(),
            epoch,
            phase: "frozen".into(),
            train_loss: train,
            val_loss: val,
            val_metric: metric,
            metric: "rmse".into(),
            seconds: 1.0,
        }
    }

    #[test]
    fn a_chart_scales_its_axes_and_skips_missing_values() {
        let c = Chart::new(&[
            epoch(1, 4.0, None, Some(12.0)),
            epoch(2, 2.0, Some(f64::NAN), Some(6.0)),
        ]);
        assert_eq!(c.metric, "rmse");
        assert_eq!(c.rows.len(), 2);
        assert_eq!(c.rows[1].val_loss, "–");
        assert!(c.val_line.is_empty(), "no finite validation loss");
        assert_eq!(c.train_line, "56.0,16.0 504.0,106.0", "loss axis 0–4");
        assert_eq!(c.dots.len(), 4);
        let labels: Vec<&str> = c.metric_ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["0", "5", "10", "15", "20"]);
        assert!(c.summary.contains("after epoch 2"), "{}", c.summary);

        let one = Chart::new(&[epoch(1, 0.5, Some(0.6), Some(0.7))]);
        assert_eq!(
            one.train_line, "280.0,83.5",
            "loss axis 0–0.8 in steps of 0.2"
        );
        let labels: Vec<&str> = one.metric_ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["0.00", "0.25", "0.50", "0.75", "1.00"]);
        assert_eq!(one.x_ticks.len(), 1);
        let none = Chart::new(&[]);
        assert!(none.rows.is_empty() && none.dots.is_empty());
    }
}
