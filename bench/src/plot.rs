//! SVG plots: latency CDF per measured point, and throughput against client count per system.

use crate::error::BenchError;
use crate::report::Row;
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use std::path::Path;

const COLORS: [RGBColor; 6] = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];

fn output_error(path: &Path, e: impl std::fmt::Display) -> BenchError {
    BenchError::Output {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// Draws the legend and writes the file.
fn finish<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    root: &DrawingArea<SVGBackend<'a>, Shift>,
    path: &Path,
) -> Result<(), BenchError> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| output_error(path, e))?;
    root.present().map_err(|e| output_error(path, e))
}

/// Latency CDF (x: µs, log scale; y: fraction of operations) of every row, to `path`.
pub fn latency_cdf(rows: &[Row], path: &Path) -> Result<(), BenchError> {
    let max_us = rows
        .iter()
        .flat_map(|r| r.cdf.last())
        .map(|p| p.0)
        .fold(10.0, f64::max)
        * 1.2;
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| output_error(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "commit latency CDF (from intended start)",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((1.0f64..max_us).log_scale(), 0.0f64..1.0)
        .map_err(|e| output_error(path, e))?;
    chart
        .configure_mesh()
        .x_desc("latency (us)")
        .y_desc("fraction of operations")
        .draw()
        .map_err(|e| output_error(path, e))?;
    for (i, row) in rows.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                row.cdf.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| output_error(path, e))?
            .label(format!("{} {} clients", row.system, row.clients))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    finish(&mut chart, &root, path)
}

/// Throughput (ops/s) against clients, one line per system, to `path`.
pub fn throughput_vs_clients(rows: &[Row], path: &Path) -> Result<(), BenchError> {
    let max_clients = rows.iter().map(|r| r.clients).max().unwrap_or(1) as f64 * 1.5;
    let max_ops = rows.iter().map(|r| r.ops_per_s).fold(10.0, f64::max) * 2.0;
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| output_error(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("throughput vs clients", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (1.0f64..max_clients).log_scale(),
            (1.0f64..max_ops).log_scale(),
        )
        .map_err(|e| output_error(path, e))?;
    chart
        .configure_mesh()
        .x_desc("clients")
        .y_desc("committed ops/s")
        .draw()
        .map_err(|e| output_error(path, e))?;
    let mut systems: Vec<&str> = rows.iter().map(|r| r.system.as_str()).collect();
    systems.sort_unstable();
    systems.dedup();
    for (i, system) in systems.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut points: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.system == system)
            .map(|r| (r.clients as f64, r.ops_per_s.max(1.0)))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| output_error(path, e))?
            .label(system.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(|e| output_error(path, e))?;
    }
    finish(&mut chart, &root, path)
}
