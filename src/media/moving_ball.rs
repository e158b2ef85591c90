//! The demo cameras' ball, drawn by the daemon onto a static black picture. videotestsrc's own `ball`
//! pattern renders every line of every frame through its generic path: 11 % of a core at 640x480@30
//! on the bench machine, more than the x264 encode. A static pattern is rendered once and copied, and
//! drawing a ball on the copy costs almost nothing (bench/results/issue7_notes.md).

use super::luma_probe::{self, Luma};

/// Video-range white; the black background's chroma is already neutral, so only luma is drawn.
const WHITE: u8 = 235;
/// Milliseconds for one crossing of the frame, horizontally and vertically; different periods make
/// the ball wander over the whole picture instead of along one diagonal.
const CROSS_X_MS: u64 = 4_000;
const CROSS_Y_MS: u64 = 2_700;

/// Draws the ball into every frame passing `pad` (planar YUV on a black pattern), placed by the
/// frame's running time so it moves at the same speed whatever the frame rate.
pub fn draw_buffers(pad: &gst::Pad) {
    luma_probe::draw_on_frames(pad, |luma: Luma| {
        let t_ms = luma.pts.map_or(0, |pts| pts.mseconds());
        draw(luma.plane, luma.stride, luma.width, luma.height, t_ms);
    });
}

fn radius(width: usize, height: usize) -> usize {
    width.min(height) / 12
}

/// Centre of the ball at `t_ms`: bouncing between the edges, never leaving the frame.
fn centre(t_ms: u64, width: usize, height: usize) -> (usize, usize) {
    let r = radius(width, height);
    let x = r + bounce(t_ms, CROSS_X_MS, width.saturating_sub(2 * r + 1));
    let y = r + bounce(t_ms, CROSS_Y_MS, height.saturating_sub(2 * r + 1));
    (x, y)
}

/// 0 -> span -> 0, one way per `period_ms`.
fn bounce(t_ms: u64, period_ms: u64, span: usize) -> usize {
    let phase = t_ms % (2 * period_ms);
    let along = if phase < period_ms {
        phase
    } else {
        2 * period_ms - phase
    };
    (along as u128 * span as u128 / period_ms as u128) as usize
}

/// Draws the ball for `t_ms` into a luma plane; a plane shorter than its geometry says is left alone.
fn draw(luma: &mut [u8], stride: usize, width: usize, height: usize, t_ms: u64) {
    if width == 0 || height == 0 || stride < width || luma.len() < stride * (height - 1) + width {
        return;
    }
    let r = radius(width, height) as i64;
    let (cx, cy) = centre(t_ms, width, height);
    for dy in -r..=r {
        let half = ((r * r - dy * dy) as f64).sqrt() as usize;
        let row = (cy as i64 + dy) as usize * stride;
        luma[row + cx - half..=row + cx + half].fill(WHITE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLACK: u8 = 16;

    fn frame(stride: usize, height: usize) -> Vec<u8> {
        vec![BLACK; stride * height]
    }

    fn white_pixels(luma: &[u8]) -> Vec<usize> {
        luma.iter()
            .enumerate()
            .filter(|(_, &p)| p == WHITE)
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn a_round_ball_is_drawn_where_the_clock_puts_it() {
        let (width, height, stride) = (640, 480, 704);
        let mut luma = frame(stride, height);
        draw(&mut luma, stride, width, height, 1_234);
        let (cx, cy) = centre(1_234, width, height);
        let r = radius(width, height);
        assert_eq!(luma[cy * stride + cx], WHITE, "centre");
        assert_eq!(luma[(cy - r) * stride + cx], WHITE, "top");
        assert_eq!(luma[cy * stride + cx + r], WHITE, "right");
        assert_eq!(
            luma[(cy - r + 2) * stride + cx + r - 2],
            BLACK,
            "outside the disc, inside its box"
        );
        let area = white_pixels(&luma).len() as f64;
        let disc = std::f64::consts::PI * (r * r) as f64;
        assert!((area - disc).abs() < disc * 0.1, "area {area} vs {disc}");
        assert!(
            white_pixels(&luma).iter().all(|i| i % stride < width),
            "nothing drawn into the padding"
        );
    }

    #[test]
    fn the_ball_moves_and_stays_inside_the_frame() {
        let (width, height) = (320, 240);
        let r = radius(width, height);
        let mut seen = std::collections::HashSet::new();
        for t in (0..20_000).step_by(33) {
            let (x, y) = centre(t, width, height);
            assert!(x >= r && x + r < width && y >= r && y + r < height, "t {t}: ({x}, {y})");
            seen.insert((x, y));
        }
        assert!(seen.len() > 500, "only {} positions", seen.len());
        // Corners of its travel are reached.
        assert_eq!(centre(0, width, height), (r, r));
        assert_eq!(centre(CROSS_X_MS, width, height).0, width - r - 1);
        assert_eq!(centre(CROSS_Y_MS, width, height).1, height - r - 1);
    }

    #[test]
    fn a_plane_shorter_than_its_geometry_is_left_alone() {
        let mut luma = frame(640, 100);
        draw(&mut luma, 640, 640, 480, 0);
        assert!(white_pixels(&luma).is_empty());
    }
}
