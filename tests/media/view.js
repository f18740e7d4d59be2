// Opens the emulator's viewer page in headless Chromium (the system's browser,
// driven by puppeteer-core) and checks that the master's video plays: the
// page reaches its first frame, getVideoPlaybackQuality().totalVideoFrames
// grows, and the picture is not black (pixels sampled through a canvas).
//
// Usage: node view.js --url URL [--viewers N] [--screenshot PATH]
//                     [--timeout-ms T] [--watch-ms W] [--hold-ms H]
//                     [--hold-file PATH] [--chromium PATH]
//   --viewers N     open N pages at once (N viewers of the channel; default 1)
//   --watch-ms W    how long frames must keep coming after the first (default 2000)
//   --hold-ms H     keep the pages open H ms more and check again that frames
//                   grew (for faults injected meanwhile; default 0)
//   --hold-file F   with --hold-ms: write F once the first check passed, so a
//                   script knows when to inject its fault
// Environment: KVS_VIEW_LOG=1 copies each page's log to stderr.
// Prints one JSON line per viewer: {"viewer": i, "timings": {...},
// "frames": [before, after], "nonBlackFraction": x}, then "view: ok" or
// "view: FAILED: why". Exit status 0 only if every viewer passed.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const puppeteer = require('puppeteer-core');

function parseArgs(argv) {
  const args = {
    url: null, viewers: 1, screenshot: null, timeoutMs: 30000, watchMs: 2000, holdMs: 0,
    holdFile: null, chromium: process.env.CHROMIUM || '/usr/bin/chromium',
  };
  for (let i = 2; i < argv.length; i++) {
    const value = argv[i + 1];
    switch (argv[i]) {
      case '--url': args.url = value; break;
      case '--viewers': args.viewers = Number(value); break;
      case '--screenshot': args.screenshot = value; break;
      case '--timeout-ms': args.timeoutMs = Number(value); break;
      case '--watch-ms': args.watchMs = Number(value); break;
      case '--hold-ms': args.holdMs = Number(value); break;
      case '--hold-file': args.holdFile = value; break;
      case '--chromium': args.chromium = value; break;
      default: throw new Error('unknown argument ' + argv[i]);
    }
    i++;
  }
  if (!args.url) throw new Error('--url is required');
  if (!(args.viewers >= 1 && args.viewers <= 10)) throw new Error('--viewers must be 1 to 10');
  return args;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Frames must grow and the picture must not be black.
async function checkPlaying(page, label, watchMs) {
  const before = await page.evaluate(() => window.kvsSample());
  await sleep(watchMs);
  const after = await page.evaluate(() => window.kvsSample());
  if (!(after.totalVideoFrames > before.totalVideoFrames)) {
    throw new Error(`${label}: totalVideoFrames did not grow (${before.totalVideoFrames} -> ${after.totalVideoFrames})`);
  }
  if (!(after.width > 0 && after.height > 0)) throw new Error(`${label}: no video size`);
  if (!(after.nonBlackFraction > 0.2)) {
    throw new Error(`${label}: the picture is black (${(after.nonBlackFraction * 100).toFixed(1)}% non-black pixels)`);
  }
  return { before, after };
}

async function main() {
  const args = parseArgs(process.argv);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'kvs-chromium-'));
  const browser = await puppeteer.launch({
    executablePath: args.chromium,
    headless: true,
    userDataDir: profile,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage', '--autoplay-policy=no-user-gesture-required',
      // Several viewers are several tabs: keep the ones behind the first rendering.
      '--disable-renderer-backgrounding', '--disable-background-timer-throttling',
      '--disable-backgrounding-occluded-windows',
      // Loopback ICE: real host candidates (no mDNS names), loopback allowed.
      '--disable-features=WebRtcHideLocalIpsWithMdns', '--allow-loopback-in-peer-connection',
    ],
  });
  let failure = null;
  const pages = [];
  try {
    for (let i = 0; i < args.viewers; i++) {
      const page = await browser.newPage();
      await page.setViewport({ width: 760, height: 1000 }); // the video and the timings
      page.on('console', (message) => console.error(`[viewer ${i}] console: ${message.text()}`));
      page.on('pageerror', (error) => console.error(`[viewer ${i}] page error: ${error}`));
      const url = args.url + (args.url.includes('?') ? '&' : '?') + `clientId=media-viewer-${process.pid}-${i}`;
      await page.goto(url, { waitUntil: 'load', timeout: args.timeoutMs });
      pages.push(page);
    }
    const results = await Promise.all(pages.map(async (page, i) => {
      const label = `viewer ${i}`;
      try {
        await page.waitForFunction(
          () => window.kvsTimings.firstFrame !== undefined || window.kvsState.error !== null,
          { timeout: args.timeoutMs, polling: 50 });
      } catch (error) {
        const status = await page.evaluate(() => window.kvsState.status);
        const log = await page.$eval('#log', (element) => element.textContent);
        throw new Error(`${label}: no first frame within ${args.timeoutMs} ms (status: ${status})\n${log}`);
      }
      const error = await page.evaluate(() => window.kvsState.error);
      if (error) throw new Error(`${label}: ${error}`);
      const played = await checkPlaying(page, label, args.watchMs);
      return { page, played };
    }));
    if (args.screenshot) {
      fs.mkdirSync(path.dirname(args.screenshot), { recursive: true });
      await results[0].page.screenshot({ path: args.screenshot });
    }
    if (args.holdMs > 0) {
      if (args.holdFile) fs.writeFileSync(args.holdFile, 'playing\n');
      await sleep(args.holdMs);
      for (let i = 0; i < results.length; i++) {
        results[i].held = await checkPlaying(results[i].page, `viewer ${i} (after the hold)`, args.watchMs);
      }
    }
    for (let i = 0; i < results.length; i++) {
      const { page, played, held } = results[i];
      const timings = await page.evaluate(() => window.kvsTimings);
      const state = await page.evaluate(() => window.kvsState);
      const last = held ? held.after : played.after;
      if (process.env.KVS_VIEW_LOG) console.error(await page.$eval('#log', (element) => element.textContent));
      console.log(JSON.stringify({
        viewer: i, clientId: `media-viewer-${process.pid}-${i}`, timings, frames: [played.before.totalVideoFrames, last.totalVideoFrames],
        size: `${last.width}x${last.height}`, nonBlackFraction: Number(last.nonBlackFraction.toFixed(3)),
        signalingReconnects: state.signalingReconnects,
        candidates: { local: state.localCandidates, remote: state.remoteCandidates },
      }));
    }
    // Leave the way a closed tab does: signaling closed, peer connection closed.
    for (const page of pages) await page.evaluate(() => window.kvsStop()).catch(() => {});
  } catch (error) {
    failure = error;
  } finally {
    await browser.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
  if (failure) {
    console.log('view: FAILED: ' + failure.message);
    process.exit(1);
  }
  console.log('view: ok');
}

main().catch((error) => {
  console.log('view: FAILED: ' + (error && error.stack || error));
  process.exit(1);
});
