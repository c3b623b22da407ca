// Drive OHIF Viewer v3 in Debian chromium (headless, via puppeteer-core) and report what it shows.
//
//   node check_ohif.js CONFIG_JSON
// CONFIG_JSON: {"baseUrl", "studyUid", "views": [{"name", "seriesUid", "wait": "segmentation"|"measurements",
//               "minSegments", "minMeasurements", "probe"}], "outDir", "chromium", "timeoutMs"}
// ("probe": optional JavaScript expression evaluated in the page after the wait, for debugging.)
// For each view it opens /viewer?StudyInstanceUIDs=...&initialSeriesInstanceUID=..., waits (real waits,
// polling OHIF's own services) until the SEG or the SR is loaded and drawn, takes a screenshot, and
// prints one JSON object on stdout with what window.services reports. Only 127.0.0.1 is reachable:
// every other request is aborted (the viewer must not leave loopback).
'use strict';
const fs = require('fs');
const path = require('path');
const puppeteer = require('puppeteer-core');

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const timeoutMs = cfg.timeoutMs || 90000;

function stateInPage() {
  // Runs in the page: a plain-JSON summary of OHIF's segmentation and measurement state.
  const s = window.services || (window.servicesManager && window.servicesManager.services);
  if (!s) return { ready: false, reason: 'window.services not available yet' };
  const out = { ready: true, segmentations: [], representations: [], measurements: [], viewports: [] };
  try {
    const segs = s.segmentationService.getSegmentations() || [];
    for (const seg of segs) {
      const segments = Object.values(seg.segments || {}).filter(Boolean).map((x) => ({
        segmentIndex: x.segmentIndex, label: x.label, color: x.color || null,
      }));
      out.segmentations.push({ id: seg.segmentationId || seg.id, label: seg.label, segments });
    }
  } catch (e) { out.segError = String(e); }
  try {
    const grid = s.viewportGridService.getState();
    const vps = grid.viewports instanceof Map ? [...grid.viewports.values()] : Object.values(grid.viewports || {});
    for (const vp of vps) {
      const id = vp.viewportId;
      let reps = [];
      try { reps = s.segmentationService.getSegmentationRepresentations(id) || []; } catch (e) { /* older API */ }
      out.viewports.push({
        viewportId: id,
        displaySetInstanceUIDs: vp.displaySetInstanceUIDs || [],
        representations: reps.map((r) => ({ segmentationId: r.segmentationId, type: r.type, visible: r.visible !== false })),
      });
      out.representations.push(...reps.map((r) => ({ viewportId: id, segmentationId: r.segmentationId, type: r.type, visible: r.visible !== false })));
    }
  } catch (e) { out.vpError = String(e); }
  try {
    const ms = s.measurementService.getMeasurements() || [];
    for (const m of ms) {
      out.measurements.push({
        uid: m.uid, label: m.label, toolName: m.toolName, displayText: m.displayText || null,
        points: m.points || [], referenceSeriesUID: m.referenceSeriesUID, frameOfReferenceUID: m.FrameOfReferenceUID,
        referencedImageId: m.referencedImageId || (m.metadata && m.metadata.referencedImageId) || null,
      });
    }
  } catch (e) { out.measError = String(e); }
  try {
    // What is drawn: cornerstone's annotation state (the SR viewport renders its SCOORDs as
    // DICOMSRDisplay annotations; hydrated or hand-made ones are other tools).
    const ct = window.cornerstoneTools;
    const all = ct && ct.annotation ? ct.annotation.state.getAllAnnotations() : [];
    out.annotations = all.map((a) => ({
      toolName: a.metadata && a.metadata.toolName,
      trackingUid: a.data && a.data.TrackingUniqueIdentifier,
      points: ((a.data && a.data.handles && a.data.handles.points) || []).map((p) => Array.from(p)),
      label: a.data && a.data.label,
      labels: ((a.data && a.data.labels) || []).map((l) => `${l.label}: ${l.value}`),
      referencedImageId: a.metadata && a.metadata.referencedImageId,
      visible: a.isVisible !== false,
    }));
  } catch (e) { out.annError = String(e); }
  try {
    const sets = s.displaySetService.getActiveDisplaySets() || [];
    out.displaySets = sets.map((d) => ({
      Modality: d.Modality, SeriesInstanceUID: d.SeriesInstanceUID, displaySetInstanceUID: d.displaySetInstanceUID,
      isLoaded: !!d.isLoaded, isHydrated: !!d.isHydrated,
      // What the SR viewport draws before hydration: each measurement with its image coordinates.
      srMeasurements: d.Modality === 'SR' ? (d.measurements || []).map((m) => ({
        trackingUid: m.TrackingUniqueIdentifier, trackingId: m.TrackingIdentifier, graphicType: m.graphicType,
        coords: (m.coords || []).map((c) => ({ valueType: c.ValueType, graphicType: c.GraphicType, graphicData: c.GraphicData })),
        labels: (m.labels || []).map((l) => `${l.label}: ${l.value}`),
      })) : undefined,
    }));
  } catch (e) { out.dsError = String(e); }
  return out;
}

function satisfied(view, st) {
  if (!st || !st.ready) return false;
  if (view.wait === 'segmentation') {
    const shown = st.representations.length > 0;
    const n = Math.max(0, ...st.segmentations.map((x) => x.segments.length));
    return shown && n >= (view.minSegments || 1);
  }
  if (view.wait === 'measurements') {
    const drawn = new Set((st.annotations || []).filter((a) => a.points.length >= 2 && a.visible).map((a) => a.trackingUid));
    const measured = st.measurements.filter((m) => m.points && m.points.length >= 2).length;
    return Math.max(drawn.size, measured) >= (view.minMeasurements || 1);
  }
  return true;
}

(async () => {
  const userDataDir = fs.mkdtempSync(path.join(cfg.outDir, 'chromium-profile-'));
  const browser = await puppeteer.launch({
    executablePath: cfg.chromium || '/usr/bin/chromium',
    headless: true,
    userDataDir,
    args: [
      '--no-sandbox', '--disable-gpu', '--enable-unsafe-swiftshader', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-default-apps', '--disable-extensions', '--metrics-recording-only', '--mute-audio',
      '--window-size=1600,1000',
    ],
    defaultViewport: { width: 1600, height: 1000 },
  });
  const report = { views: [], blockedRequests: [], consoleErrors: [] };
  try {
    for (const view of cfg.views) {
      const page = await browser.newPage();
      await page.setRequestInterception(true);
      page.on('request', (req) => {
        const u = new URL(req.url());
        if (u.protocol === 'data:' || u.protocol === 'blob:' || u.hostname === '127.0.0.1') return req.continue();
        report.blockedRequests.push(req.url());
        return req.abort();
      });
      page.on('console', (msg) => { if (msg.type() === 'error') report.consoleErrors.push(msg.text().slice(0, 300)); });
      page.on('pageerror', (err) => report.consoleErrors.push(String(err).slice(0, 300)));
      await page.evaluateOnNewDocument(() => {
        localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));
      });
      const url = `${cfg.baseUrl}/viewer?StudyInstanceUIDs=${cfg.studyUid}&initialSeriesInstanceUID=${view.seriesUid}`;
      const started = Date.now();
      await page.goto(url, { waitUntil: 'domcontentloaded', timeout: timeoutMs });
      let st = null;
      while (Date.now() - started < timeoutMs) {
        st = await page.evaluate(stateInPage).catch((e) => ({ ready: false, reason: String(e) }));
        if (satisfied(view, st)) break;
        await new Promise((r) => setTimeout(r, 500));
      }
      const ok = satisfied(view, st);
      // Let the viewport finish rendering the overlay/annotations before the screenshot.
      if (ok) await new Promise((r) => setTimeout(r, 3000));
      st = await page.evaluate(stateInPage).catch(() => st);
      if (view.probe) st.probe = await page.evaluate(view.probe).catch((e) => String(e));
      const shot = path.join(cfg.outDir, `${view.name}.png`);
      await page.screenshot({ path: shot });
      report.views.push({ name: view.name, url, ok, seconds: (Date.now() - started) / 1000, screenshot: shot, state: st });
      await page.close();
    }
  } finally {
    await browser.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(report) + '\n');
})().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
});
