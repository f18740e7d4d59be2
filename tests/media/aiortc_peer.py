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

  aiortc_peer.py storage --control-plane URL --channel NAME --client-id ID
                         [--frames N] [--timeout S]
      plays the channel's storage session (WebRTC ingestion) as the emulator's
      external storage peer, attached beforehand with POST /admin/storage-peer
      {"channel": NAME, "client_id": ID}. Its signaling is NOT the library: a
      raw WebSocket (the `websockets` package) to the data plane as a viewer
      with that client id, its URL from the emulator's /viewer/connect. On the
      emulator-only frame {"messageType": "STORAGE_JOIN", "role": "MASTER"}
      (the master called JoinStorageSession) it sends the master a recvonly
      video offer without candidates, then trickles its candidates as
      ICE_CANDIDATE messages, applies the master's answer and candidates, and
      passes once N frames were decoded and the picture is not black. A
      later join starts over with a new offer. The real service's session
      offers H.264; this one offers VP8 only, the codec examples_c/camera
      sends.

Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (the emulator's demo
keys). The library's callbacks run on its dispatcher thread; they hand each
message to the asyncio loop with call_soon_threadsafe, where aiortc runs.
Prints "aiortc-viewer: ok" / "aiortc-master: ..." / "aiortc-storage: ok"
lines; exit status 0 only on success.
"""

import argparse
import asyncio
import base64
import fractions
import json
import os
import sys
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))

import av  # noqa: E402
from aiortc import (  # noqa: E402
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
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


def add_candidate_line(pc, line, sdp_mid, sdp_mline_index):
    """A candidate line -> pc.addIceCandidate (end-of-candidates skipped)."""
    line = line or ""
    if line.startswith("a="):
        line = line[2:]
    if not line.startswith("candidate:"):
        return None
    candidate = candidate_from_sdp(line[len("candidate:"):])
    candidate.sdpMid = sdp_mid
    candidate.sdpMLineIndex = sdp_mline_index
    return pc.addIceCandidate(candidate)


def add_remote_candidate(pc, message):
    """An ICE_CANDIDATE message of the binding -> pc.addIceCandidate."""
    return add_candidate_line(pc, message.candidate, message.sdp_mid, message.sdp_mline_index)


def luma_stats(frame):
    """(fraction of samples brighter than 40, mean) over the Y plane, sampled."""
    gray = frame.reformat(format="gray", width=64, height=48)
    plane = gray.planes[0]
    data = bytes(plane)
    samples = [data[row * plane.line_size + col] for row in range(48) for col in range(64)]
    bright = sum(1 for value in samples if value > 40)
    return bright / len(samples), sum(samples) / len(samples)


def watch_frames(pc, role, frames, mark):
    """Decodes pc's incoming video; the event is set once `frames` frames came,
    with the picture's size and brightness in the returned dict."""
    frames_seen = asyncio.Event()
    result = {}

    @pc.on("iceconnectionstatechange")
    def on_ice():
        log(role, f"ICE {pc.iceConnectionState}")
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
                if count == frames:
                    bright, mean = luma_stats(frame)
                    result.update(frames=count, size=f"{frame.width}x{frame.height}",
                                  nonBlackFraction=round(bright, 3), meanLuma=round(mean, 1))
                    frames_seen.set()

        asyncio.ensure_future(consume())

    return frames_seen, result


def verdict(role, result):
    """0 if the decoded picture is not black (more than 20 % bright samples)."""
    if result["nonBlackFraction"] <= 0.2:
        log(role, f"FAILED: the picture is black ({result})")
        return 1
    log(role, "ok")
    return 0


async def run_viewer(args):
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    marks = {}

    def mark(name):
        marks.setdefault(name, round((time.monotonic() - started) * 1000, 1))

    signaling = Signaling(loop, kvs.Role.VIEWER, args, client_id=args.client_id)
    pc = RTCPeerConnection(NO_ICE_SERVERS)
    frames_seen, result = watch_frames(pc, "viewer", args.frames, mark)

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
        return verdict("viewer", result)
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


def split_candidates(sdp):
    """aiortc puts its gathered candidates into the SDP; for trickling they are
    taken out: (the SDP without candidate lines, [(line, sdpMid, mline index)])."""
    lines, candidates = [], []
    index = -1
    for line in sdp.splitlines():
        if line.startswith("m="):
            index += 1
        elif line.startswith("a=candidate:"):
            candidates.append((line[2:], index))
            continue
        elif line == "a=end-of-candidates":
            continue
        lines.append(line)
    mids = [line[len("a=mid:"):] for line in lines if line.startswith("a=mid:")]
    return "\r\n".join(lines) + "\r\n", [(c, mids[i] if i < len(mids) else None, i) for c, i in candidates]


def data_plane_frame(action, payload):
    """A viewer's frame to the master: the payload JSON in base64 (spec §6)."""
    body = base64.b64encode(json.dumps(payload).encode()).decode()
    return json.dumps({"action": action, "messagePayload": body})


def viewer_url(control_plane, channel, client_id):
    """The emulator's /viewer/connect: the data plane URL for a viewer with
    `client_id`, presigned with the emulator's key (loopback callers only)."""
    query = urllib.parse.urlencode({"channel": channel, "clientId": client_id})
    with urllib.request.urlopen(f"{control_plane}/viewer/connect?{query}", timeout=10) as response:
        return json.load(response)["url"]


async def run_storage(args):
    # Only this role needs it (pip: websockets, installed by scripts/media-tests.sh).
    from websockets.asyncio.client import connect

    started = time.monotonic()
    marks = {}

    def mark(name):
        marks.setdefault(name, round((time.monotonic() - started) * 1000, 1))

    url = await asyncio.to_thread(viewer_url, args.control_plane, args.channel, args.client_id)
    session = {"pc": None, "pending": [], "joins": 0, "seen": None, "result": None}
    frames_ready = asyncio.Event()

    async def on_join(ws, notice):
        session["joins"] += 1
        mark("join")
        log("storage", f"STORAGE_JOIN #{session['joins']} from the master of {notice.get('channelArn')}")
        if session["pc"] is not None:  # the master joined again: start over
            await session["pc"].close()
        pc = RTCPeerConnection(NO_ICE_SERVERS)
        session.update(pc=pc, pending=[])
        seen, result = watch_frames(pc, "storage", args.frames, mark)
        session.update(seen=seen, result=result)
        asyncio.ensure_future(relay(seen))
        transceiver = pc.addTransceiver("video", direction="recvonly")
        vp8 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType in ("video/VP8", "video/rtx")]
        transceiver.setCodecPreferences(vp8)
        await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers here
        sdp, candidates = split_candidates(pc.localDescription.sdp)
        await ws.send(data_plane_frame("SDP_OFFER", {"type": "offer", "sdp": sdp}))
        mark("offerSent")
        for line, mid, index in candidates:
            await ws.send(data_plane_frame("ICE_CANDIDATE", {"candidate": line, "sdpMid": mid, "sdpMLineIndex": index}))
        log("storage", f"offer sent (VP8, recvonly), then {len(candidates)} candidate(s)")

    async def relay(seen):
        await seen.wait()
        if session["seen"] is seen:
            frames_ready.set()

    async def on_frame(ws, frame):
        message = json.loads(frame)
        kind = message.get("messageType")
        if kind == "STORAGE_JOIN":
            if message.get("role") == "MASTER":
                await on_join(ws, message)
            else:  # a viewer's JoinStorageSessionAsViewer: the external peer cannot reach viewers
                log("storage", f"viewer join ignored: {message.get('clientId')}")
            return
        pc = session["pc"]
        if pc is None:
            log("storage", f"{kind} before any join; ignored")
            return
        if kind == "SDP_ANSWER":
            answer = json.loads(base64.b64decode(message["messagePayload"]))
            mark("answerReceived")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            for candidate in session["pending"]:
                await add_candidate_line(pc, *candidate)
            session["pending"] = []
        elif kind == "ICE_CANDIDATE":
            c = json.loads(base64.b64decode(message["messagePayload"]))
            mark("firstRemoteCandidate")
            candidate = (c.get("candidate"), c.get("sdpMid"), c.get("sdpMLineIndex"))
            if pc.remoteDescription is None:
                session["pending"].append(candidate)
            else:
                pending = add_candidate_line(pc, *candidate)
                if pending is not None:
                    await pending
        else:
            log("storage", f"{kind}: {json.dumps(message)[:200]}")

    async def pump(ws):
        async for frame in ws:
            await on_frame(ws, frame)

    try:
        async with connect(url, compression=None, proxy=None, open_timeout=10) as ws:
            mark("signalingConnected")
            log("storage", f"connected as {args.client_id}; waiting for STORAGE_JOIN")
            pump_task = asyncio.ensure_future(pump(ws))
            try:
                await asyncio.wait_for(asyncio.shield(frames_ready.wait()), args.timeout)
            except asyncio.TimeoutError:
                if pump_task.done() and pump_task.exception() is not None:
                    log("storage", f"signaling failed: {pump_task.exception()!r}")
                ice = session["pc"].iceConnectionState if session["pc"] else "no join"
                log("storage", f"FAILED: {args.frames} frames not decoded within {args.timeout} s "
                               f"({session['joins']} join(s), ICE {ice}; marks {marks})")
                return 1
            finally:
                pump_task.cancel()
            result = session["result"]
            print(json.dumps({"stack": "aiortc", "role": "storage", "clientId": args.client_id,
                              "joins": session["joins"], "timings": marks, **result}), flush=True)
            return verdict("storage", result)
    finally:
        if session["pc"] is not None:
            await session["pc"].close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=["viewer", "master", "storage"])
    parser.add_argument("--control-plane", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--client-id", default=f"aiortc-viewer-{os.getpid()}")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--offer-only", action="store_true", help="viewer: leave right after the offer")
    args = parser.parse_args()
    runner = {"viewer": run_viewer, "master": run_master, "storage": run_storage}[args.role]
    sys.exit(asyncio.run(runner(args)))


if __name__ == "__main__":
    main()
