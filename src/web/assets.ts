// The console's stylesheet and script, served by the gateway itself from /ui/assets/ (no CDN,
// no third-party code at run time). They live in this module, so they are part of the built
// JavaScript the package and the image ship (package.json "files": dist/src/**/*.js). The script
// is progressive enhancement only: every page works, and refreshes, without it.
import { createHash } from 'node:crypto';
import { REVIEW_STYLE } from '../review/index.js';

const CONSOLE_CSS = `
:root{--fg:#14171a;--muted:#5b6570;--line:#d5d9de;--bg:#fff;--head:#f2f4f6;--accent:#1d4ed8;--bad:#b00020;--ok:#0a6b2c}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:var(--bg);margin:0}
header.top{display:flex;flex-wrap:wrap;align-items:center;gap:1em;padding:.6em 1.2em;border-bottom:1px solid var(--line);background:var(--head)}
header.top .brand{font-weight:700}
nav.main a{margin-right:1em;color:var(--fg);text-decoration:none}
nav.main a[aria-current=page]{font-weight:700;border-bottom:2px solid var(--accent)}
header.top .who{margin-left:auto;color:var(--muted)}
header.top form{display:inline}
main{padding:1em 1.2em;max-width:1600px}
h1{font-size:20px;margin:.2em 0 .6em}h2{font-size:16px;margin:1.4em 0 .4em}
table{border-collapse:collapse;width:100%;margin:.4em 0 1em}
th,td{border:1px solid var(--line);padding:3px 6px;text-align:left;vertical-align:top;word-break:break-word}
th{background:var(--head)}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code,pre,.mono{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace}
pre{white-space:pre-wrap;background:var(--head);padding:.6em;border:1px solid var(--line);overflow:auto}
.nw{white-space:nowrap}.muted{color:var(--muted)}.bad{color:var(--bad);font-weight:600}.ok{color:var(--ok);font-weight:600}
.notice{padding:.6em .8em;border:1px solid var(--line);background:#fffbe6;margin:.6em 0}
.error{padding:.6em .8em;border:1px solid var(--bad);background:#fff0f0;margin:.6em 0}
form.inline{display:inline}
form.search{display:flex;flex-wrap:wrap;gap:.6em;align-items:flex-end;margin:.4em 0 1em}
form.search label{display:flex;flex-direction:column;font-size:12px;color:var(--muted)}
input,select,textarea,button{font:inherit}
input[type=text],select{padding:2px 4px}
textarea{width:100%;min-height:12em;font:12px ui-monospace,monospace}
button{padding:2px 10px;cursor:pointer}
button.danger{color:#fff;background:var(--bad);border:1px solid var(--bad)}
button.primary{color:#fff;background:var(--ok);border:1px solid var(--ok)}
.decisions{display:flex;flex-wrap:wrap;gap:1.2em;margin:.6em 0 1em}
.decisions form{display:flex;gap:.4em}.decisions input[type=text]{width:22em}
table.record{width:auto}
.pager{display:flex;gap:1.2em;margin:.4em 0}
.slot{display:none}
@media print{header.top,form,button,.pager,.no-print{display:none!important}main{padding:0}a{color:inherit;text-decoration:none}th{background:#ddd!important;-webkit-print-color-adjust:exact;print-color-adjust:exact}tr{break-inside:avoid}}
`;

const CONSOLE_JS = `// ciport console: progressive enhancement (docs/console.md). Every page works without it.
(function () {
  'use strict';
  // Live sessions: refresh the table body from its fragment URL every few seconds.
  var body = document.querySelector('tbody[data-refresh]');
  var status = document.getElementById('refresh-status');
  if (body) {
    var url = body.getAttribute('data-refresh');
    var every = Number(body.getAttribute('data-every')) || 5000;
    var say = function (text) { if (status) status.textContent = text; };
    var timer = 0;
    var tick = function () {
      if (document.hidden) return;
      fetch(url, { credentials: 'same-origin', redirect: 'manual', headers: { accept: 'text/html' } })
        .then(function (res) {
          if (res.status !== 200) {
            clearInterval(timer);
            say('Live refresh stopped (' + (res.status || 'signed out') + '): reload the page.');
            return undefined;
          }
          return res.text().then(function (text) {
            body.innerHTML = text;
            say('Updated ' + new Date().toLocaleTimeString());
          });
        })
        .catch(function () { say('Live refresh failed; retrying.'); });
    };
    timer = setInterval(tick, every);
    document.addEventListener('visibilitychange', tick);
    say('Live: refreshed every ' + Math.round(every / 1000) + ' s');
  }
  // Ask before a form marked data-confirm is sent (revoke).
  document.addEventListener('submit', function (ev) {
    var form = ev.target;
    var question = form && form.getAttribute && form.getAttribute('data-confirm');
    if (question && !window.confirm(question)) ev.preventDefault();
  });
})();
`;

/** A small mark, so browsers do not ask the API for /favicon.ico (a 404). */
const FAVICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#1d4ed8"/><path d="M4 8h8M8 4v8" stroke="#fff" stroke-width="2"/></svg>';

export interface Asset {
  type: string;
  body: string;
  etag: string;
}

function asset(type: string, body: string): Asset {
  return { type, body, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` };
}

/** Served at /ui/assets/<name>, without sign-in (nothing in them is secret). */
export const ASSETS: ReadonlyMap<string, Asset> = new Map([
  ['console.css', asset('text/css; charset=utf-8', CONSOLE_CSS)],
  ['console.js', asset('text/javascript; charset=utf-8', CONSOLE_JS)],
  ['review.css', asset('text/css; charset=utf-8', REVIEW_STYLE)],
  ['favicon.svg', asset('image/svg+xml', FAVICON_SVG)],
]);
