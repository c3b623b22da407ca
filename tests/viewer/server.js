// Static server for the prebuilt OHIF dist on 127.0.0.1 with an SPA fallback, our app-config.js,
// and a same-origin proxy of /dicom-web/* to Orthanc's DICOMweb plugin. No dependencies.
//
//   node server.js DIST_DIR APP_CONFIG ORTHANC_HTTP_PORT [PORT]
// Prints "listening <port>" on stdout once ready.
'use strict';
const http = require('http');
const fs = require('fs');
const path = require('path');

const [distDir, appConfig, orthancPort, portArg] = process.argv.slice(2);
if (!distDir || !appConfig || !orthancPort) {
  console.error('usage: node server.js DIST_DIR APP_CONFIG ORTHANC_HTTP_PORT [PORT]');
  process.exit(2);
}
const root = path.resolve(distDir);
const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'application/javascript', '.mjs': 'application/javascript',
  '.css': 'text/css', '.json': 'application/json', '.wasm': 'application/wasm', '.png': 'image/png',
  '.svg': 'image/svg+xml', '.ico': 'image/x-icon', '.woff': 'font/woff', '.woff2': 'font/woff2',
  '.ttf': 'font/ttf', '.txt': 'text/plain', '.webmanifest': 'application/manifest+json',
};

function sendFile(res, file) {
  res.writeHead(200, {
    'Content-Type': TYPES[path.extname(file).toLowerCase()] || 'application/octet-stream',
    // OHIF uses SharedArrayBuffer for some decoders: cross-origin isolation headers allow it.
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cross-Origin-Embedder-Policy': 'require-corp',
    'Cache-Control': 'no-store',
  });
  fs.createReadStream(file).pipe(res);
}

function proxy(req, res) {
  const upstream = http.request(
    { host: '127.0.0.1', port: Number(orthancPort), path: req.url, method: req.method, headers: { ...req.headers, host: `127.0.0.1:${orthancPort}` } },
    (up) => {
      const headers = { ...up.headers, 'Cross-Origin-Resource-Policy': 'same-origin' };
      res.writeHead(up.statusCode || 502, headers);
      up.pipe(res);
    },
  );
  upstream.on('error', (err) => { res.writeHead(502); res.end(String(err)); });
  req.pipe(upstream);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (url.pathname.startsWith('/dicom-web/') || url.pathname === '/dicom-web') return proxy(req, res);
  if (url.pathname === '/app-config.js') return sendFile(res, path.resolve(appConfig));
  const file = path.resolve(root, '.' + decodeURIComponent(url.pathname));
  if (file.startsWith(root) && fs.existsSync(file) && fs.statSync(file).isFile()) return sendFile(res, file);
  if (path.extname(url.pathname)) { res.writeHead(404); return res.end('not found'); }
  return sendFile(res, path.join(root, 'index.html')); // SPA fallback: /viewer, /segmentation, ...
});
server.listen(Number(portArg || 0), '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
