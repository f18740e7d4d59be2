#!/usr/bin/env node
// Self-test helper only: a tiny signaling MASTER written with plain `ws` (no SDK), standing in
// for the C master (examples_c/master) so viewer.js can be tested on its own.
//
// Connects as master to  ENDPOINT/?X-Amz-ChannelARN=<urlencoded ARN>
// prints `master: connected` once the WebSocket is open (same ready line as the C master),
// answers every SDP_OFFER with an SDP_ANSWER to the offer's senderClientId, and echoes every
// ICE_CANDIDATE payload back to its sender unchanged.
//
// Usage: node echo-master.js --endpoint ws://127.0.0.1:PORT --channel-arn ARN
//                            [--exit-after-ms MS] [--pascal-case] [--verbose]
//   --pascal-case   send keys the way the C SDK does (action, RecipientClientId, MessagePayload)
//                   instead of the JS SDK's camelCase (action, recipientClientId, messagePayload)
// Exits 0 on SIGTERM/SIGINT or after --exit-after-ms (default 60000); 1 if the connection fails
// or closes on its own.
'use strict';

const WebSocket = require('ws');

function usage(msg) {
  if (msg) console.error(`echo-master.js: ${msg}`);
  console.error('usage: node echo-master.js --endpoint ws://127.0.0.1:PORT --channel-arn ARN ' +
    '[--exit-after-ms MS] [--pascal-case] [--verbose]');
  process.exit(1);
}

const o = { endpoint: null, channelArn: null, exitAfterMs: 60000, pascal: false, verbose: false };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const val = () => (i + 1 < argv.length ? argv[++i] : usage(`${a} needs a value`));
  switch (a) {
    case '--endpoint': o.endpoint = val(); break;
    case '--channel-arn': o.channelArn = val(); break;
    case '--exit-after-ms': o.exitAfterMs = Number(val()); break;
    case '--pascal-case': o.pascal = true; break;
    case '--verbose': o.verbose = true; break;
    default: usage(`unknown argument ${a}`);
  }
}
if (!o.endpoint || !o.channelArn) usage('--endpoint and --channel-arn are required');

const log = (...a) => console.log('[echo-master]', ...a);
const b64 = (obj) => Buffer.from(JSON.stringify(obj), 'utf8').toString('base64');

const base = /^wss?:\/\/[^/]+$/.test(o.endpoint) ? `${o.endpoint}/` : o.endpoint;
const url = `${base}?X-Amz-ChannelARN=${encodeURIComponent(o.channelArn)}`;
log(`connecting to ${url}`);
const ws = new WebSocket(url);
let stopping = false;

function stop(code) {
  stopping = true;
  try { ws.close(); } catch (e) { /* ignore */ }
  setTimeout(() => process.exit(code), 100).unref();
}
process.on('SIGTERM', () => stop(0));
process.on('SIGINT', () => stop(0));
setTimeout(() => { log('exit-after reached'); stop(0); }, o.exitAfterMs).unref();

function send(action, recipientClientId, messagePayload) {
  const msg = o.pascal
    ? { action, RecipientClientId: recipientClientId, MessagePayload: messagePayload }
    : { action, recipientClientId, messagePayload };
  const text = JSON.stringify(msg);
  if (o.verbose) log(`>> ${text}`);
  ws.send(text);
}

function answerSdpFor(offerSdp) {
  const lines = [
    'v=0',
    'o=- 1234567890123456789 2 IN IP4 127.0.0.1',
    's=-',
    't=0 0',
    'a=group:BUNDLE 0',
    'a=msid-semantic: WMS',
    'm=application 9 UDP/DTLS/SCTP webrtc-datachannel',
    'c=IN IP4 0.0.0.0',
    'a=ice-ufrag:mAsT',
    'a=ice-pwd:echomasterinteroptestpwd00',
    'a=ice-options:trickle',
    'a=fingerprint:sha-256 0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9:0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9',
    'a=setup:active',
    'a=mid:0',
    'a=sctp-port:5000',
    'a=max-message-size:262144',
  ];
  // Sanity: we only answer things that look like SDP.
  if (typeof offerSdp !== 'string' || !offerSdp.startsWith('v=0')) return null;
  return `${lines.join('\r\n')}\r\n`;
}

ws.on('unexpected-response', (req, res) => {
  log(`handshake refused: HTTP ${res.statusCode} ${res.statusMessage}`);
  process.exit(1);
});
ws.on('open', () => {
  console.log('master: connected');
});
ws.on('error', (err) => {
  log(`error: ${err.message}`);
  if (!stopping) process.exit(1);
});
ws.on('close', (code, reason) => {
  log(`closed (${code} ${reason})`);
  if (!stopping) process.exit(1);
});
ws.on('message', (data, isBinary) => {
  const text = data.toString('utf8');
  if (o.verbose) log(`<< ${isBinary ? '(binary) ' : ''}${text}`);
  if (text.length === 0) return;
  let msg;
  try { msg = JSON.parse(text); } catch (e) { log(`ignoring non-JSON frame: ${text}`); return; }
  const type = msg.messageType;
  const sender = msg.senderClientId;
  if (type === 'STATUS_RESPONSE' || type === 'GO_AWAY' || type === 'RECONNECT_ICE_SERVER') {
    log(`${type}: ${text}`);
    return;
  }
  if (!sender) { log(`ignoring ${type} without senderClientId: ${text}`); return; }
  let payload;
  try {
    payload = JSON.parse(Buffer.from(msg.messagePayload || '', 'base64').toString('utf8'));
  } catch (e) {
    log(`ignoring ${type} from ${sender}: payload is not base64 JSON`);
    return;
  }
  if (type === 'SDP_OFFER') {
    const sdp = answerSdpFor(payload.sdp);
    if (payload.type !== 'offer' || !sdp) { log(`ignoring malformed offer from ${sender}`); return; }
    send('SDP_ANSWER', sender, b64({ type: 'answer', sdp }));
    log(`answered SDP offer from ${sender}`);
  } else if (type === 'ICE_CANDIDATE') {
    // Echo the candidate JSON exactly as received (same base64 text).
    send('ICE_CANDIDATE', sender, msg.messagePayload);
    log(`echoed ICE candidate to ${sender}: ${payload.candidate}`);
  } else {
    log(`ignoring messageType ${type}`);
  }
});
