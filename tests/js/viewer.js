#!/usr/bin/env node
// Interop check: the OFFICIAL AWS KVS WebRTC JS SDK (`amazon-kinesis-video-streams-webrtc`)
// SignalingClient, acting as a VIEWER, against the kvs-signaling emulator (plain ws://, loopback).
//
// Flow: open -> send SDP offer -> wait for SDP answer -> send N ICE candidates -> wait for the
// master to echo all N back. Exits 0 on success, 1 on any failure or timeout; always stops by
// itself (hard deadline = --timeout-ms).
//
// Usage:
//   node viewer.js --endpoint ws://127.0.0.1:PORT --channel-arn ARN [--client-id ID]
//                  [--candidates N] [--timeout-ms T] [--signer plain|sigv4] [--region R]
//                  [--correlation-ids] [--verbose]
//
// --signer plain (default): a custom `requestSigner` that returns
//     ws://HOST:PORT/?X-Amz-ChannelARN=...&X-Amz-ClientId=...   (no SigV4 parameters)
// --signer sigv4: the SDK's own SigV4RequestSigner with fixed dummy credentials, signed for
//     wss://HOST:PORT and then sent over ws:// (the SDK refuses to sign anything but wss://).
//     Same host header, so an emulator that verifies SigV4 can check the signature.
'use strict';

const WS = require('ws');

// ---------------------------------------------------------------------------------------------
// The SDK does `new (WebSocket || require('ws'))(url)`. `WebSocket` is a bare identifier: on
// Node 20 (no global WebSocket) that expression throws a ReferenceError instead of falling back
// to `ws`, so a global must exist. We always install `ws` (Node 22's built-in one is replaced
// too, so every Node version runs the same client). The subclass only adds optional frame logs.
// ---------------------------------------------------------------------------------------------
const opts = parseArgs(process.argv.slice(2));
const T0 = process.hrtime.bigint();
const ms = () => Number(process.hrtime.bigint() - T0) / 1e6;
const log = (...a) => console.log(`[viewer +${ms().toFixed(1)}ms]`, ...a);
const vlog = (...a) => { if (opts.verbose) log(...a); };

class LoggingWebSocket extends WS {
  constructor(address, protocols, options) {
    super(address, protocols, options);
    this.on('upgrade', (res) => {
      vlog('upgrade response', res.statusCode,
        JSON.stringify({
          'sec-websocket-protocol': res.headers['sec-websocket-protocol'],
          'sec-websocket-extensions': res.headers['sec-websocket-extensions'],
        }));
    });
    // No 'unexpected-response' listener on purpose: without one, ws turns a non-101 handshake
    // into an 'error' ("Unexpected server response: 404") that the SDK forwards to us.
    this.on('message', (data, isBinary) => {
      vlog(`<< ${isBinary ? '(binary) ' : ''}${data.toString()}`);
    });
    this.on('ping', () => vlog('<< ping'));
  }
  send(data, ...rest) {
    vlog(`>> ${data}`);
    return super.send(data, ...rest);
  }
}
globalThis.WebSocket = LoggingWebSocket;

const { SignalingClient, Role, SigV4RequestSigner } = require('amazon-kinesis-video-streams-webrtc');
const sdkVersion = require('amazon-kinesis-video-streams-webrtc/package.json').version;
const wsVersion = require('ws/package.json').version;

function usage(msg) {
  if (msg) console.error(`viewer.js: ${msg}`);
  console.error('usage: node viewer.js --endpoint ws://127.0.0.1:PORT --channel-arn ARN ' +
    '[--client-id ID] [--candidates N] [--timeout-ms T] [--signer plain|sigv4] [--region R] ' +
    '[--correlation-ids] [--verbose]');
  process.exit(1);
}

function parseArgs(argv) {
  const o = {
    endpoint: null, channelArn: null, clientId: `js-viewer-${process.pid}`,
    candidates: 3, timeoutMs: 10000, signer: 'plain', region: null,
    correlationIds: false, verbose: false,
  };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let v;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) { v = a.slice(eq + 1); a = a.slice(0, eq); }
    const val = () => {
      if (v !== undefined) return v;
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--endpoint': o.endpoint = val(); break;
      case '--channel-arn': o.channelArn = val(); break;
      case '--client-id': o.clientId = val(); break;
      case '--candidates': o.candidates = Number(val()); break;
      case '--timeout-ms': o.timeoutMs = Number(val()); break;
      case '--signer': o.signer = val(); break;
      case '--region': o.region = val(); break;
      case '--correlation-ids': o.correlationIds = true; break;
      case '--verbose': o.verbose = true; break;
      case '--help': case '-h': usage(); break;
      default: usage(`unknown argument ${a}`);
    }
  }
  if (!o.endpoint || !/^wss?:\/\//.test(o.endpoint)) usage('--endpoint ws://HOST:PORT is required');
  if (!o.channelArn) usage('--channel-arn is required');
  if (!Number.isInteger(o.candidates) || o.candidates < 0) usage('--candidates must be an integer >= 0');
  if (!(o.timeoutMs > 0)) usage('--timeout-ms must be > 0');
  if (!['plain', 'sigv4'].includes(o.signer)) usage('--signer must be plain or sigv4');
  if (!o.region) {
    const m = /^arn:[^:]+:kinesisvideo:([^:]+):/.exec(o.channelArn);
    o.region = m ? m[1] : 'us-west-2';
  }
  return o;
}

// --- request signers (the SDK's documented `requestSigner` config hook) ----------------------
function queryString(params) {
  // Same shape as the SDK's SigV4RequestSigner.createQueryString: keys sorted, encodeURIComponent.
  return Object.keys(params).sort()
    .map((k) => `${k}=${encodeURIComponent(params[k])}`).join('&');
}

function withRootPath(endpoint) {
  // Real endpoints come without a path; the SDK then emits HOST/?query. Do the same.
  return /^wss?:\/\/[^/]+$/.test(endpoint) ? `${endpoint}/` : endpoint;
}

const plainSigner = {
  async getSignedURL(endpoint, queryParams) {
    return `${withRootPath(endpoint)}?${queryString(queryParams)}`;
  },
};

function sigv4Signer(region) {
  const inner = new SigV4RequestSigner(region, {
    accessKeyId: 'AKIDEXAMPLEKVSEMULATOR',
    secretAccessKey: 'kvs-emulator-dummy-secret',
  });
  return {
    async getSignedURL(endpoint, queryParams, date) {
      const secure = endpoint.startsWith('wss://');
      const signed = await inner.getSignedURL(secure ? endpoint : endpoint.replace(/^ws:\/\//, 'wss://'),
        queryParams, date);
      return secure ? signed : signed.replace(/^wss:\/\//, 'ws://');
    },
  };
}

// --- test data -------------------------------------------------------------------------------
const OFFER_SDP = [
  'v=0',
  `o=- ${4611731400430051336n + BigInt(process.pid)} 2 IN IP4 127.0.0.1`,
  's=-',
  't=0 0',
  'a=group:BUNDLE 0',
  'a=msid-semantic: WMS',
  'm=application 9 UDP/DTLS/SCTP webrtc-datachannel',
  'c=IN IP4 0.0.0.0',
  'a=ice-ufrag:kvsE',
  'a=ice-pwd:kvsemulatorinteroptestpwd0',
  'a=ice-options:trickle',
  'a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08',
  'a=setup:actpass',
  'a=mid:0',
  'a=sctp-port:5000',
  'a=max-message-size:262144',
  '',
].join('\r\n');

function makeCandidate(i) {
  return {
    candidate: `candidate:${1000 + i} 1 udp 2122260223 127.0.0.1 ${50000 + i} typ host generation 0`,
    sdpMid: '0',
    sdpMLineIndex: 0,
  };
}

// --- run -------------------------------------------------------------------------------------
function main() {
  log(`SDK amazon-kinesis-video-streams-webrtc ${sdkVersion}, ws ${wsVersion}, node ${process.version}`);
  log(`endpoint=${opts.endpoint} channelARN=${opts.channelArn} clientId=${opts.clientId} ` +
    `region=${opts.region} candidates=${opts.candidates} timeoutMs=${opts.timeoutMs} signer=${opts.signer}`);

  const baseSigner = opts.signer === 'sigv4' ? sigv4Signer(opts.region) : plainSigner;
  const requestSigner = {
    async getSignedURL(endpoint, queryParams, date) {
      const url = await baseSigner.getSignedURL(endpoint, queryParams, date);
      log(`connecting to ${url}`);
      return url;
    },
  };

  const client = new SignalingClient({
    channelARN: opts.channelArn,
    channelEndpoint: opts.endpoint,
    role: Role.VIEWER,
    clientId: opts.clientId,
    region: opts.region,
    requestSigner, // with a requestSigner, `credentials` is not needed
    systemClockOffset: 0,
  });

  const sent = [];
  for (let i = 0; i < opts.candidates; i++) sent.push(makeCandidate(i));
  const received = [];
  let finished = false;
  let tOpen = null;
  let tOffer = null;
  let tAnswer = null;
  let answer = null;
  let answerSender;
  let correlation = 0;
  const statusResponses = [];
  const cid = () => (opts.correlationIds ? `js-${process.pid}-${++correlation}` : undefined);

  function finish(ok, reason) {
    if (finished) return;
    finished = true;
    clearTimeout(deadline);
    log('---- summary ----');
    log(`opened: ${tOpen !== null ? `yes (+${tOpen.toFixed(1)} ms)` : 'no'}`);
    log(`sdp answer: ${answer ? `yes, type=${answer.type}, sdp ${answer.sdp.length} chars, ` +
      `senderClientId=${answerSender === undefined ? '(absent)' : JSON.stringify(answerSender)}` : 'no'}`);
    if (tOffer !== null && tAnswer !== null) {
      log(`offer->answer round trip: ${(tAnswer - tOffer).toFixed(3)} ms`);
    }
    log(`ice candidates: sent ${tAnswer !== null ? sent.length : 0}, echoed back ${received.length}/${sent.length}`);
    if (statusResponses.length) log(`status responses: ${JSON.stringify(statusResponses)}`);
    log(`${ok ? 'PASS' : 'FAIL'}: ${reason}`);
    process.exitCode = ok ? 0 : 1;
    try { client.close(); } catch (e) { /* ignore */ }
    // Do not wait for a polite close handshake: exit soon regardless.
    setTimeout(() => process.exit(ok ? 0 : 1), 200).unref();
  }

  const deadline = setTimeout(() => {
    const stage = tOpen === null ? 'waiting for the WebSocket to open'
      : tAnswer === null ? 'waiting for the SDP answer'
        : `waiting for ICE candidates (${received.length}/${sent.length} echoed)`;
    finish(false, `timeout after ${opts.timeoutMs} ms ${stage}`);
  }, opts.timeoutMs);

  client.on('open', () => {
    tOpen = ms();
    log('signaling client open');
    try {
      tOffer = ms();
      client.sendSdpOffer({ type: 'offer', sdp: OFFER_SDP }, undefined, cid());
      log(`sent SDP offer (${OFFER_SDP.length} chars of SDP)`);
    } catch (e) {
      finish(false, `sendSdpOffer threw: ${e.message}`);
    }
  });

  client.on('sdpAnswer', (payload, senderClientId) => {
    const t = ms();
    if (answer) {
      log(`extra SDP answer ignored (senderClientId=${senderClientId})`);
      return;
    }
    tAnswer = t;
    answer = payload;
    answerSender = senderClientId;
    log(`got SDP answer: type=${payload && payload.type} senderClientId=` +
      `${senderClientId === undefined ? '(absent)' : JSON.stringify(senderClientId)} ` +
      `round trip ${(tAnswer - tOffer).toFixed(3)} ms`);
    if (!payload || payload.type !== 'answer' || typeof payload.sdp !== 'string' || !payload.sdp.startsWith('v=0')) {
      finish(false, `malformed SDP answer payload: ${JSON.stringify(payload)}`);
      return;
    }
    if (sent.length === 0) {
      finish(true, 'offer answered (no ICE candidates requested)');
      return;
    }
    try {
      for (const c of sent) {
        client.sendIceCandidate(c, undefined, cid());
        log(`sent ICE candidate ${JSON.stringify(c.candidate)}`);
      }
    } catch (e) {
      finish(false, `sendIceCandidate threw: ${e.message}`);
    }
  });

  client.on('iceCandidate', (cand, senderClientId) => {
    log(`got ICE candidate ${JSON.stringify(cand)} senderClientId=` +
      `${senderClientId === undefined ? '(absent)' : JSON.stringify(senderClientId)}`);
    received.push(cand);
    if (received.length < sent.length) return;
    // Compare as multisets keyed by the full candidate init (order across the emulator is
    // expected to be preserved, but only the set is required here).
    const key = (c) => JSON.stringify([c && c.candidate, c && c.sdpMid, c && c.sdpMLineIndex]);
    const want = sent.map(key).sort();
    const got = received.map(key).sort();
    if (received.length > sent.length || JSON.stringify(want) !== JSON.stringify(got)) {
      finish(false, `echoed candidates differ from sent ones: sent ${JSON.stringify(want)} got ${JSON.stringify(got)}`);
      return;
    }
    const inOrder = received.every((c, i) => key(c) === key(sent[i]));
    finish(true, `offer answered and all ${sent.length} ICE candidates echoed back` +
      `${inOrder ? ' in order' : ' (out of order)'}`);
  });

  client.on('sdpOffer', (payload, senderClientId) => {
    log(`unexpected SDP offer from ${senderClientId}: ${JSON.stringify(payload)}`);
  });

  client.on('statusResponse', (status) => {
    log(`STATUS_RESPONSE ${JSON.stringify(status)}`);
    statusResponses.push(status);
    if (status && status.success !== true && status.statusCode !== '200') {
      finish(false, `service reported an error: ${JSON.stringify(status)}`);
    }
  });

  client.on('error', (err) => {
    const msg = err && (err.message || (err.error && err.error.message) || err.type) || String(err);
    log(`signaling client error: ${msg}`);
    finish(false, `signaling client error: ${msg}`);
  });

  client.on('close', () => {
    log('signaling client closed');
    if (!finished) finish(false, 'connection closed before the exchange completed');
  });

  try {
    client.open();
  } catch (e) {
    finish(false, `open threw: ${e.message}`);
  }
}

main();
