#!/usr/bin/python3
"""A stand-in IP camera for the camera-recipe tests: an RTSP server on loopback (GStreamer's
gst-rtsp-server through PyGObject, Debian packages gir1.2-gst-rtsp-server-1.0 + python3-gi)
serving a finite synthetic stream, so the README's RTSP recipe runs verbatim but for the URL.

Usage: rtsp_test_server.py PORT FRAMES   → rtsp://127.0.0.1:PORT/camera, then "ready" on stdout.

The stream is videotestsrc's moving ball (it gives the MNIST gate both verdicts) at 160×120,
10 fps, as Motion-JPEG over RTP (all in gst-plugins-good: no patent-encumbered encoder needed).
After FRAMES frames the server sends end-of-stream (RTCP BYE) and ffmpeg exits normally. Each
client gets its own pipeline from frame 0 (not shared), so every run sees the same frames.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

if len(sys.argv) != 3:
    sys.exit("usage: rtsp_test_server.py PORT FRAMES")
port, frames = sys.argv[1], int(sys.argv[2])
Gst.init(None)
factory = GstRtspServer.RTSPMediaFactory()
# I420 before jpegenc: rtpjpegpay refuses the 4:4:4 JPEG it would otherwise get.
factory.set_launch(
    f"( videotestsrc pattern=ball num-buffers={frames} "
    "! video/x-raw,width=160,height=120,framerate=10/1,format=I420 "
    "! jpegenc ! rtpjpegpay name=pay0 pt=26 )"
)
factory.set_shared(False)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
server.get_mount_points().add_factory("/camera", factory)
if server.attach(None) == 0:
    sys.exit(f"error: cannot listen on 127.0.0.1:{port}")
print("ready", flush=True)
GLib.MainLoop().run()
