//! Drawing into raw frames as they leave a pad: the shared part of the synthetic ball and the time code.

use gst::prelude::*;
use gst_video::prelude::*;

/// One frame's luma plane as handed to a drawing: `stride` bytes a row, `pts` its running time.
pub struct Luma<'a> {
    pub plane: &'a mut [u8],
    pub stride: usize,
    pub width: usize,
    pub height: usize,
    pub pts: Option<gst::ClockTime>,
}

/// Calls `draw` on the luma plane of every planar YUV buffer passing `pad`. A buffer the drawing
/// cannot get at (other caps, a mapping failure) passes unchanged: a frame is never dropped for it.
pub fn draw_on_frames(pad: &gst::Pad, draw: impl Fn(Luma) + Send + Sync + 'static) {
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, probe| {
        let info = pad
            .current_caps()
            .and_then(|caps| gst_video::VideoInfo::from_caps(&caps).ok())
            .filter(|info| info.is_yuv() && info.n_planes() >= 3);
        if let (Some(info), Some(gst::PadProbeData::Buffer(buffer))) = (info, probe.data.as_mut()) {
            let pts = buffer.pts();
            if let Ok(mut frame) = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer.make_mut(), &info) {
                let (width, height) = (frame.width() as usize, frame.height() as usize);
                let stride = frame.plane_stride()[0] as usize;
                if let Ok(plane) = frame.plane_data_mut(0) {
                    draw(Luma {
                        plane,
                        stride,
                        width,
                        height,
                        pts,
                    });
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
}
