"""A second WebRTC stack on our signaling: aiortc peers whose signaling is the
C library, through the Python binding (python/kvs_signaling).

  aiortc_peer.py viewer --control-plane URL --channel NAME --client-id ID
                        [--frames N] [--timeout S] [--offer-only]
      joins as a VIEWER (the library's viewer path), offers to receive video,
      trickles ICE both ways, and passes once N frames (default 30) were
      decoded and the picture is not black. Prints the timings as JSON. With
      --offer-only it leaves right after sending its offer.

  aiortc_peer.py master --control-plane URL --channel NAME [--seconds S]
      serves as MASTER: answers every viewer's offer with a live test pattern
      (colour bars with a moving band) until S seconds passed (default 60).

Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (the emulator's demo
keys). The library's callbacks run on its dispatcher thread; they hand each
message to the asyncio loop with call_soon_threadsafe, where aiortc runs.
Prints "aiortc-viewer: ok" / "aiortc-master: ..." lines; exit status 0 only
on success.
"""

import argparse
import asyncio
import fractions
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))

import av  # noqa: E402
from aiortc import (  # noqa: E402
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.sdp import candidate_from_sdp  # noqa: E402

import kvs_signaling as kvs  # noqa: E402


# aiortc's default configuration has a public STUN server; this machine (and
# the test's network namespace) reaches none, and gathering would wait ~5 s.
NO_ICE_SERVERS = RTCConfiguration(iceServers=[])


def log(role, text):
    print(f"aiortc-{role}: {text}", flush=True)


class Signaling:
    """The C library as this peer's signaling; messages arrive on an asyncio queue."""

    def __init__(self, loop, role, args, client_id=None):
        self.loop = loop
        self.queue = asyncio.Queue()
        self.client = kvs.Client(
            role,
            None,
            None,
            client_id=client_id,
            use_control_plane=True,
            channel_name=args.channel,
            control_plane_url=args.control_plane,
            region="us-west-2",
            credentials_from_env=True,
            buffer_early_candidates=True,
            on_message=self._on_message,
        )

    def _on_message(self, _client, message):
        # Dispatcher thread: hand over to the loop.
        self.loop.call_soon_threadsafe(self.queue.put_nowait, message)

    async def connect(self):
        await asyncio.to_thread(self.client.connect)

    async def close(self):
        await asyncio.to_thread(self.client.close)


def add_remote_candidate(pc, message):
    """An ICE_CANDIDATE message -> pc.addIceCandidate (end-of-candidates skipped)."""
    line = message.candidate or ""
    if line.startswith("a="):
        line = line[2:]
    if not line.startswith("candidate:"):
        return None
    candidate = candidate_from_sdp(line[len("candidate:"):])
    candidate.sdpMid = message.sdp_mid
    candidate.sdpMLineIndex = message.sdp_mline_index
    return pc.addIceCandidate(candidate)


def luma_stats(frame):
    """(fraction of samples brighter than 40, mean) over the Y plane, sampled."""
    gray = frame.reformat(format="gray", width=64, height=48)
    plane = gray.planes[0]
    data = bytes(plane)
    samples = [data[row * plane.line_size + col] for row in range(48) for col in range(64)]
    bright = sum(1 for value in samples if value > 40)
    return bright / len(samples), sum(samples) / len(samples)


async def run_viewer(args):
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    marks = {}

    def mark(name):
        marks.setdefault(name, round((time.monotonic() - started) * 1000, 1))

    signaling = Signaling(loop, kvs.Role.VIEWER, args, client_id=args.client_id)
    pc = RTCPeerConnection(NO_ICE_SERVERS)
    frames_seen = asyncio.Event()
    result = {}

    @pc.on("iceconnectionstatechange")
    def on_ice():
        log("viewer", f"ICE {pc.iceConnectionState}")
        if pc.iceConnectionState == "completed":
            mark("iceConnected")

    @pc.on("track")
    def on_track(track):
        async def consume():
            count = 0
            while True:
                try:
                    frame = await track.recv()
                except Exception:  # the track ended
                    return
                count += 1
                if count == 1:
                    mark("firstFrame")
                if count == args.frames:
                    bright, mean = luma_stats(frame)
                    result.update(frames=count, size=f"{frame.width}x{frame.height}",
                                  nonBlackFraction=round(bright, 3), meanLuma=round(mean, 1))
                    frames_seen.set()

        asyncio.ensure_future(consume())

    try:
        await signaling.connect()
        mark("signalingConnected")
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers here
        signaling.client.send_sdp_offer(pc.localDescription.sdp)
        mark("offerSent")
        if args.offer_only:
            # A viewer that vanishes right after its offer (its ICE never answers).
            log("viewer", "offer sent; leaving")
            return 0
        pending = []

        async def pump():
            while True:
                message = await signaling.queue.get()
                if message.message_type == kvs.MessageType.SDP_ANSWER and message.sdp:
                    mark("answerReceived")
                    await pc.setRemoteDescription(RTCSessionDescription(sdp=message.sdp, type="answer"))
                    for candidate in pending:
                        await add_remote_candidate(pc, candidate)
                    pending.clear()
                elif message.message_type == kvs.MessageType.ICE_CANDIDATE:
                    mark("firstRemoteCandidate")
                    if pc.remoteDescription is None:
                        pending.append(message)
                    else:
                        await add_remote_candidate(pc, message)

        pump_task = asyncio.ensure_future(pump())
        try:
            await asyncio.wait_for(frames_seen.wait(), args.timeout)
        except asyncio.TimeoutError:
            log("viewer", f"FAILED: {args.frames} frames not decoded within {args.timeout} s "
                          f"(ICE {pc.iceConnectionState}; marks {marks})")
            return 1
        finally:
            pump_task.cancel()
        print(json.dumps({"stack": "aiortc", "clientId": args.client_id, "timings": marks, **result}), flush=True)
        if result["nonBlackFraction"] <= 0.2:
            log("viewer", f"FAILED: the picture is black ({result})")
            return 1
        log("viewer", "ok")
        return 0
    finally:
        await pc.close()
        await signaling.close()


class TestPattern(VideoStreamTrack):
    """Colour bars with a white band that moves down one line per frame."""

    BARS = [(235, 128, 128), (210, 16, 146), (170, 166, 16), (145, 54, 34),
            (106, 202, 222), (81, 90, 240), (41, 240, 110)]  # Y, U, V

    def __init__(self, width=320, height=240):
        super().__init__()
        self.width, self.height = width, height
        self.count = 0
        bar = width // len(self.BARS)
        row_y = bytes(self.BARS[min(x // bar, len(self.BARS) - 1)][0] for x in range(width))
        self.rows_y = row_y
        self.row_u = bytes(self.BARS[min(2 * x // bar, len(self.BARS) - 1)][1] for x in range(width // 2))
        self.row_v = bytes(self.BARS[min(2 * x // bar, len(self.BARS) - 1)][2] for x in range(width // 2))

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        band = self.count % self.height
        self.count += 1
        y = bytearray(self.rows_y * self.height)
        y[band * self.width:(band + 8) * self.width] = b"\xeb" * (8 * self.width)
        planes = [bytes(y[: self.width * self.height]), self.row_u * (self.height // 2),
                  self.row_v * (self.height // 2)]
        for plane, data in zip(frame.planes, planes):
            stride = plane.line_size
            width = len(data) // (plane.height or 1)
            if stride == width:
                plane.update(data)
            else:
                padded = b"".join(data[r * width:(r + 1) * width] + b"\x00" * (stride - width)
                                  for r in range(plane.height))
                plane.update(padded)
        frame.pts = pts
        frame.time_base = time_base if isinstance(time_base, fractions.Fraction) else fractions.Fraction(time_base)
        return frame


async def run_master(args):
    loop = asyncio.get_running_loop()
    signaling = Signaling(loop, kvs.Role.MASTER, args)
    peers = {}  # viewer id -> RTCPeerConnection
    await signaling.connect()
    log("master", "connected")
    deadline = time.monotonic() + args.seconds
    try:
        while time.monotonic() < deadline:
            try:
                message = await asyncio.wait_for(signaling.queue.get(), 0.5)
            except asyncio.TimeoutError:
                continue
            viewer = message.sender_client_id
            if message.message_type == kvs.MessageType.SDP_OFFER and message.sdp and viewer:
                if viewer in peers:
                    await peers.pop(viewer).close()
                pc = RTCPeerConnection(NO_ICE_SERVERS)
                peers[viewer] = pc
                await pc.setRemoteDescription(RTCSessionDescription(sdp=message.sdp, type="offer"))
                pc.addTrack(TestPattern())  # takes the offer's recvonly video transceiver
                await pc.setLocalDescription(await pc.createAnswer())
                signaling.client.send_sdp_answer(pc.localDescription.sdp, recipient=viewer)
                log("master", f"answered {viewer}")
            elif message.message_type == kvs.MessageType.ICE_CANDIDATE and viewer in peers:
                pending = add_remote_candidate(peers[viewer], message)
                if pending is not None:
                    await pending
    finally:
        for pc in peers.values():
            await pc.close()
        await signaling.close()
    log("master", f"stopped after serving {len(peers)} viewer(s)")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=["viewer", "master"])
    parser.add_argument("--control-plane", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--client-id", default=f"aiortc-viewer-{os.getpid()}")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--offer-only", action="store_true", help="viewer: leave right after the offer")
    args = parser.parse_args()
    runner = run_viewer if args.role == "viewer" else run_master
    sys.exit(asyncio.run(runner(args)))


if __name__ == "__main__":
    main()
