#!/usr/bin/env node
// Relay latency baseline: the OFFICIAL AWS KVS WebRTC JS SDK SignalingClient
// (`amazon-kinesis-video-streams-webrtc`, installed in tests/js) in Node, as
// both the master and the viewer of one channel through a running emulator.
// The viewer sends the offer of bench/data/offer.sdp, the master answers with
// bench/data/answer.sdp; prints one JSON line with the offer -> answer samples
// in microseconds. Stops by itself (hard deadline).
//
//   node bench/js/relay.js --endpoint ws://127.0.0.1:PORT --channel-arn ARN
//                          [--rounds R] [--warmup W] [--timeout-ms T]
'use strict';

const fs = require('fs');
const path = require('path');

const MODULES = process.env.KVS_JS_MODULES || path.join(__dirname, '..', '..', 'tests', 'js', 'node_modules');
const WS = require(path.join(MODULES, 'ws'));
// The SDK does `new (WebSocket || require('ws'))(url)`; Node 20 has no global.
globalThis.WebSocket = WS;
const { SignalingClient, Role } = require(path.join(MODULES, 'amazon-kinesis-video-streams-webrtc'));

function parseArgs(argv) {
  const o = { endpoint: null, channelArn: null, rounds: 200, warmup: 20, timeoutMs: 60000 };
  for (let i = 0; i < argv.length; i += 2) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case '--endpoint': o.endpoint = v; break;
      case '--channel-arn': o.channelArn = v; break;
      case '--rounds': o.rounds = Number(v); break;
      case '--warmup': o.warmup = Number(v); break;
      case '--timeout-ms': o.timeoutMs = Number(v); break;
      default:
        console.error(`relay.js: unknown argument ${argv[i]}`);
        process.exit(2);
    }
  }
  if (!o.endpoint || !o.channelArn) {
    console.error('usage: node relay.js --endpoint ws://127.0.0.1:PORT --channel-arn ARN [--rounds R] [--warmup W]');
    process.exit(2);
  }
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const sdp = (name) => fs.readFileSync(path.join(__dirname, '..', 'data', name), 'utf8')
  .split('\n').filter((l) => l.length > 0).map((l) => `${l}\r\n`).join('');
const OFFER = { type: 'offer', sdp: sdp('offer.sdp') };
const ANSWER = { type: 'answer', sdp: sdp('answer.sdp') };
const region = (/^arn:[^:]+:kinesisvideo:([^:]+):/.exec(opts.channelArn) || [])[1] || 'us-west-2';

// No SigV4 against the emulator: the SDK's documented requestSigner hook.
const base = /^wss?:\/\/[^/]+$/.test(opts.endpoint) ? `${opts.endpoint}/` : opts.endpoint;
const requestSigner = {
  async getSignedURL(_endpoint, queryParams) {
    const q = Object.keys(queryParams).sort().map((k) => `${k}=${encodeURIComponent(queryParams[k])}`).join('&');
    return `${base}?${q}`;
  },
};

function client(role, clientId) {
  return new SignalingClient({
    channelARN: opts.channelArn, channelEndpoint: opts.endpoint, role, clientId, region, requestSigner,
    systemClockOffset: 0,
  });
}

function fail(why) {
  console.error(`relay.js: ${why}`);
  process.exit(1);
}

const deadline = setTimeout(() => fail(`timeout after ${opts.timeoutMs} ms`), opts.timeoutMs);
const master = client(Role.MASTER);
const viewer = client(Role.VIEWER, 'bench-js-viewer');
for (const c of [master, viewer]) c.on('error', (e) => fail(`signaling error: ${e && (e.message || e.type)}`));

master.on('sdpOffer', (_offer, sender) => master.sendSdpAnswer(ANSWER, sender));

const samples = [];
let round = 0;
let sentAt = 0n;
function next() {
  if (round === opts.warmup + opts.rounds) {
    clearTimeout(deadline);
    process.stdout.write(`${JSON.stringify({ bench: 'relay', impl: 'js-sdk', samples_us: samples })}\n`);
    master.close();
    viewer.close();
    setTimeout(() => process.exit(0), 100).unref();
    return;
  }
  sentAt = process.hrtime.bigint();
  viewer.sendSdpOffer(OFFER);
}
viewer.on('sdpAnswer', () => {
  const us = Number(process.hrtime.bigint() - sentAt) / 1e3;
  if (round >= opts.warmup) samples.push(Math.round(us * 10) / 10);
  round += 1;
  next();
});
viewer.on('open', next);
master.on('open', () => viewer.open());
master.open();
