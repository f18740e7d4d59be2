// The emulator's viewer page: joins a signaling channel as a viewer over the
// emulator's WebSocket, offers to receive video, trickles ICE both ways and
// shows the master's video. Query: channel=NAME (default demo-channel),
// clientId=ID (default: random).
//
// For tests and benchmarks it exposes:
//   window.kvsTimings  marks in ms since the page's script started
//                      (signalingConnected, offerSent, answerReceived,
//                      firstRemoteCandidate, iceConnected, firstFrame) and
//                      phases (signalingConnect, offerToAnswer,
//                      answerToIceConnected, iceConnectedToFirstFrame, total);
//   window.kvsState    { status, error, signalingReconnects, localCandidates,
//                        remoteCandidates };
//   window.kvsSample() { totalVideoFrames, width, height, nonBlackFraction,
//                        meanLuma } read from the video element and a canvas.
'use strict';

(function () {
  const params = new URLSearchParams(location.search);
  const channel = params.get('channel') || 'demo-channel';
  const clientId = params.get('clientId') || 'viewer-' + Math.random().toString(36).slice(2, 10);
  const started = performance.now();
  const marks = {};
  const state = { status: 'starting', error: null, signalingReconnects: 0, localCandidates: 0, remoteCandidates: 0 };
  window.kvsTimings = marks;
  window.kvsState = state;

  const video = document.getElementById('video');
  const logBox = document.getElementById('log');
  const statusBox = document.getElementById('status');
  document.getElementById('channel').textContent = channel + ' (as ' + clientId + ')';

  const since = () => Math.round((performance.now() - started) * 10) / 10;

  function log(text) {
    logBox.textContent += since().toFixed(1).padStart(8) + ' ms  ' + text + '\n';
    logBox.scrollTop = logBox.scrollHeight;
  }

  function setStatus(text, kind) {
    state.status = text;
    statusBox.textContent = text;
    statusBox.className = kind || '';
  }

  function fail(text) {
    state.error = text;
    setStatus('error: ' + text, 'error');
    log('ERROR ' + text);
  }

  // The phase table, in the order they happen.
  const PHASES = [
    ['signalingConnect', 'signaling connect (URL + WebSocket open)', null, 'signalingConnected'],
    ['offerToAnswer', 'offer -> answer', 'offerSent', 'answerReceived'],
    ['offerToFirstRemoteCandidate', 'offer -> first remote candidate', 'offerSent', 'firstRemoteCandidate'],
    ['answerToIceConnected', 'answer -> ICE connected', 'answerReceived', 'iceConnected'],
    ['iceConnectedToFirstFrame', 'ICE connected -> first frame', 'iceConnected', 'firstFrame'],
    ['total', 'total (to first frame)', null, 'firstFrame'],
  ];

  function mark(name) {
    if (marks[name] !== undefined) return;
    marks[name] = since();
    log(name + ' at ' + marks[name] + ' ms (epoch ' + (performance.timeOrigin + performance.now()).toFixed(1) + ')');
    const table = document.getElementById('timings');
    for (const [key, label, from, to] of PHASES) {
      if (marks[key] !== undefined || marks[to] === undefined) continue;
      if (from !== null && marks[from] === undefined) continue;
      marks[key] = Math.round((marks[to] - (from === null ? 0 : marks[from])) * 10) / 10;
      const row = table.insertRow();
      row.insertCell().textContent = label;
      const ms = row.insertCell();
      ms.textContent = marks[key].toFixed(1);
      ms.className = 'ms';
      const at = row.insertCell();
      at.textContent = marks[to].toFixed(1);
      at.className = 'ms';
    }
  }

  // base64 of UTF-8 JSON, and back.
  function encode(object) {
    const bytes = new TextEncoder().encode(JSON.stringify(object));
    let binary = '';
    for (const b of bytes) binary += String.fromCharCode(b);
    return btoa(binary);
  }
  function decode(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return JSON.parse(new TextDecoder().decode(bytes));
  }

  const pc = new RTCPeerConnection({ iceServers: [] });
  const pendingRemote = []; // candidates that came before the answer
  let socket = null;
  let stopped = false;
  const outbox = []; // messages sent while the socket is not open

  function send(action, payload) {
    const frame = JSON.stringify({ action: action, messagePayload: encode(payload) });
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(frame);
    else outbox.push(frame);
  }

  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.onicecandidate = (event) => {
    if (!event.candidate || !event.candidate.candidate) return; // end of candidates
    const c = event.candidate;
    state.localCandidates++;
    log('local candidate ' + c.candidate);
    send('ICE_CANDIDATE', { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex });
  };
  pc.oniceconnectionstatechange = () => {
    log('ICE ' + pc.iceConnectionState);
    if (pc.iceConnectionState === 'connected' || pc.iceConnectionState === 'completed') {
      mark('iceConnected');
      setStatus('ICE connected; waiting for the first frame');
    } else if (pc.iceConnectionState === 'failed') {
      fail('ICE failed');
    }
  };
  pc.onconnectionstatechange = () => log('connection (DTLS) ' + pc.connectionState);
  pc.ontrack = (event) => {
    log('track ' + event.track.kind);
    video.srcObject = event.streams[0] || new MediaStream([event.track]);
    video.play().catch((error) => log('play(): ' + error));
  };

  function onFirstFrame() {
    if (marks.firstFrame !== undefined) return;
    mark('firstFrame');
    setStatus('live: ' + video.videoWidth + 'x' + video.videoHeight, 'live');
  }
  // A frame presented, or (in a tab that is not painted) a frame decoded.
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(onFirstFrame);
  video.addEventListener('loadeddata', onFirstFrame);

  async function addRemoteCandidate(candidate) {
    try {
      await pc.addIceCandidate(candidate);
    } catch (error) {
      log('addIceCandidate: ' + error);
    }
  }

  async function onSignal(frame) {
    let message;
    try {
      message = JSON.parse(frame);
    } catch (error) {
      log('non-JSON frame ignored');
      return;
    }
    const type = message.messageType;
    if (type === 'SDP_ANSWER') {
      const answer = decode(message.messagePayload);
      mark('answerReceived');
      await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
      while (pendingRemote.length) await addRemoteCandidate(pendingRemote.shift());
      setStatus('answered; connecting ICE');
    } else if (type === 'ICE_CANDIDATE') {
      const c = decode(message.messagePayload);
      state.remoteCandidates++;
      mark('firstRemoteCandidate');
      const candidate = { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex };
      if (pc.remoteDescription) await addRemoteCandidate(candidate);
      else pendingRemote.push(candidate);
    } else if (type === 'GO_AWAY') {
      log('GO_AWAY: reconnecting signaling (the media session goes on)');
      socket.close(1000, 'GO_AWAY');
    } else if (type === 'STATUS_RESPONSE') {
      log('STATUS_RESPONSE ' + JSON.stringify(message.statusResponse || message));
    } else {
      log('message ' + type);
    }
  }

  // Opens the signaling socket (again after a drop, GO_AWAY or restart: the
  // media session does not depend on it).
  async function connect() {
    let url;
    try {
      const query = 'channel=' + encodeURIComponent(channel) + '&clientId=' + encodeURIComponent(clientId);
      const response = await fetch('/viewer/connect?' + query, { cache: 'no-store' });
      const body = await response.json();
      if (!response.ok) throw new Error(body.message || response.status);
      url = body.url;
    } catch (error) {
      return retry('cannot get the WebSocket URL: ' + error.message);
    }
    const ws = new WebSocket(url);
    socket = ws;
    ws.onopen = () => {
      log('signaling connected');
      mark('signalingConnected');
      while (outbox.length) ws.send(outbox.shift());
      if (!marks.offerSent) offer();
    };
    ws.onmessage = (event) => onSignal(event.data).catch((error) => fail(String(error)));
    ws.onclose = (event) => {
      if (socket !== ws) return;
      log('signaling closed (' + event.code + (event.reason ? ' ' + event.reason : '') + ')');
      retry('signaling closed');
    };
  }

  function retry(why) {
    if (stopped) return;
    state.signalingReconnects++;
    if (state.signalingReconnects > 30) return fail(why + '; giving up after 30 attempts');
    log(why + '; reconnecting in 500 ms');
    setTimeout(connect, 500);
  }

  async function offer() {
    setStatus('offering');
    const description = await pc.createOffer();
    await pc.setLocalDescription(description);
    send('SDP_OFFER', { type: 'offer', sdp: pc.localDescription.sdp });
    mark('offerSent');
    setStatus('offer sent; waiting for the answer');
  }

  window.kvsSample = function () {
    const quality = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : {};
    const result = {
      totalVideoFrames: quality.totalVideoFrames || 0,
      width: video.videoWidth,
      height: video.videoHeight,
      nonBlackFraction: 0,
      meanLuma: 0,
    };
    if (!video.videoWidth) return result;
    const canvas = document.createElement('canvas');
    canvas.width = 64;
    canvas.height = 48;
    const context = canvas.getContext('2d', { willReadFrequently: true });
    context.drawImage(video, 0, 0, canvas.width, canvas.height);
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
    let bright = 0;
    let sum = 0;
    for (let i = 0; i < pixels.length; i += 4) {
      const luma = 0.299 * pixels[i] + 0.587 * pixels[i + 1] + 0.114 * pixels[i + 2];
      sum += luma;
      if (luma > 40) bright++;
    }
    const count = pixels.length / 4;
    result.nonBlackFraction = bright / count;
    result.meanLuma = sum / count;
    return result;
  };

  window.kvsStop = function () {
    stopped = true;
    if (socket) socket.close(1000, 'page stopped');
    pc.close();
  };

  setStatus('connecting signaling');
  connect();
})();
