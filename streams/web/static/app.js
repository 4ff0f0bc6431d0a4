// healthmon dashboard: plain JS, no build step, nothing fetched from outside this server.
// Views: #/ (portfolio) and #/account/<id>. Live: server-sent events from /api/events.
"use strict";

const $ = (sel) => document.querySelector(sel);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const num = (v, d = 0) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d }));
const pct = (v) => (v === null || v === undefined ? "–" : `${num(v, 1)}%`);
const money = (v) => (v === null || v === undefined ? "–" : num(v, 0));
const plural = (n, word) => `${num(n)} ${word}${n === 1 ? "" : "s"}`;
const band = (b) => `<span class="band ${esc(b || "none")}">${esc(b || "n/a")}</span>`;

async function api(path) {
  const resp = await fetch(path, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  const body = await resp.json();
  if (!resp.ok) throw new Error(body?.error?.message || resp.statusText);
  return body;
}

const TILES = [
  ["nrr", "NRR", pct, true],
  ["grr", "GRR", pct, true],
  ["logo_churn_rate", "Logo churn", pct, false],
  ["revenue_churn_rate", "Revenue churn", pct, false],
  ["healthy_pct", "% healthy", pct, true],
  ["at_risk_mrr", "MRR at risk", money, false],
];

// A sparkline of the group's monthly values (inline SVG, described for screen readers).
function spark(values, label) {
  const pts = values.map((v, i) => [i, v]).filter(([, v]) => v !== null && v !== undefined);
  if (pts.length < 2) return `<svg role="img" aria-label="${esc(label)}: not enough history"></svg>`;
  const ys = pts.map(([, v]) => v);
  const lo = Math.min(...ys), hi = Math.max(...ys), span = hi - lo || 1;
  const w = 160, h = 32, n = values.length - 1 || 1;
  const d = pts.map(([i, v], k) => `${k ? "L" : "M"}${((i / n) * (w - 4) + 2).toFixed(1)},${(h - 3 - ((v - lo) / span) * (h - 6)).toFixed(1)}`).join(" ");
  return `<svg viewBox="0 0 ${w} ${h}" preserveAspectRatio="none" role="img" aria-label="${esc(label)} trend: ${ys.map((y) => num(y, 1)).join(", ")}"><path d="${d}" fill="none" stroke="#0b57d0" stroke-width="1.6"/></svg>`;
}

function tiles(fig, trend) {
  return TILES.map(([key, title, fmt, upIsGood]) => {
    const series = trend.map((t) => t[key]);
    const prev = trend.length > 1 ? trend[trend.length - 2] : null;
    let delta = "";
    if (prev && prev[key] !== null && fig[key] !== null && prev[key] !== undefined) {
      const diff = fig[key] - prev[key];
      const arrow = diff > 0 ? "▲" : diff < 0 ? "▼" : "→";
      const good = diff === 0 ? "" : (diff > 0) === upIsGood ? " (better)" : " (worse)";
      delta = `${arrow} ${key === "at_risk_mrr" ? money(Math.abs(diff)) : num(Math.abs(diff), 1)} vs ${esc(prev.period)}${good}`;
    }
    return `<div class="tile" data-metric="${key}"><h3>${title}</h3><p class="value" data-value="${esc(fig[key])}">${fmt(fig[key])}</p>${spark(series, title)}<p class="delta">${delta || "&nbsp;"}</p></div>`;
  }).join("");
}

function bands(fig) {
  const order = ["green", "yellow", "red", "none"];
  const total = order.reduce((s, b) => s + (fig.accounts_by_band?.[b] || 0), 0) || 1;
  const bar = order.map((b) => `<div class="${b}" style="width:${((fig.accounts_by_band?.[b] || 0) / total) * 100}%"></div>`).join("");
  const rows = order.map((b) => `<tr data-band="${b}"><td>${band(b)}</td><td class="num">${num(fig.accounts_by_band?.[b] || 0)}</td><td class="num">${money(fig.mrr_by_band?.[b] || 0)}</td></tr>`).join("");
  return `<div class="bandbar" role="img" aria-label="Accounts by band: ${order.map((b) => `${b} ${fig.accounts_by_band?.[b] || 0}`).join(", ")}">${bar}</div>
    <table id="bands"><caption class="sr">Band distribution</caption><thead><tr><th>Band</th><th class="num">Accounts</th><th class="num">MRR</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function accountLink(a) {
  return `<a href="#/account/${encodeURIComponent(a.account_id)}">${esc(a.name || a.account_id)}</a>`;
}

function atRisk(fig) {
  if (!fig.at_risk.length) return `<p class="muted">No account in the red band.</p>`;
  const rows = fig.at_risk.map((a) => `<tr data-account="${esc(a.account_id)}"><td>${accountLink(a)}</td><td class="num">${money(a.mrr)}</td><td class="num">${num(a.score, 1)}</td><td>${esc(a.csm_name || a.csm)}</td><td><ul class="drivers">${a.drivers.map((d) => `<li>${esc(d)}</li>`).join("")}</ul></td></tr>`).join("");
  return `<table id="at-risk"><caption>At risk: ${plural(fig.at_risk_accounts, "account")}, ${money(fig.at_risk_mrr)} MRR</caption><thead><tr><th>Account</th><th class="num">MRR</th><th class="num">Score</th><th>CSM</th><th>Why</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function renewals(fig) {
  if (!fig.renewals_90d.length) return `<p class="muted">No renewal in the next 90 days.</p>`;
  const rows = fig.renewals_90d.map((a) => `<tr data-account="${esc(a.account_id)}"><td>${accountLink(a)}</td><td>${esc(a.renewal_date)}</td><td class="num">${money(a.mrr)}</td><td>${band(a.band)} ${num(a.score, 1)}</td><td>${esc(a.csm_name || a.csm)}</td></tr>`).join("");
  return `<table id="renewals"><caption>Renewals in the next 90 days: ${plural(fig.renewals_90d_accounts, "account")}, ${money(fig.renewals_90d_mrr)} MRR</caption><thead><tr><th>Account</th><th>Renews</th><th class="num">MRR</th><th>Health</th><th>CSM</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function bridge(fig) {
  const rows = [
    ["Starting MRR", money(fig.starting_mrr), plural(fig.starting_accounts, "account")],
    ["+ Expansion", money(fig.expansion_mrr), pct(fig.expansion_rate)],
    ["− Contraction", money(fig.contraction_mrr), ""],
    ["− Churned", money(fig.churned_mrr), plural(fig.churned_accounts, "account")],
    ["New (not in NRR)", money(fig.new_mrr), plural(fig.new_accounts, "account")],
    ["Ending MRR", money(fig.ending_mrr), `${num(fig.active_accounts)} active`],
    ["NPS", num(fig.nps, 1), plural(fig.nps_responses, "answer")],
    ["CSAT", pct(fig.csat), plural(fig.csat_responses, "answer")],
    ["CES", num(fig.ces, 2), plural(fig.ces_responses, "answer")],
  ];
  return `<table id="bridge"><caption>MRR bridge and satisfaction</caption><tbody>${rows.map(([k, v, n]) => `<tr><th scope="row">${k}</th><td class="num">${v}</td><td class="muted">${n}</td></tr>`).join("")}</tbody></table>`;
}

const state = { period: null, pinned: false, group: "all" }; // pinned: the user chose a period

async function loadFilters() {
  const info = await api("/api/portfolio/periods");
  const sel = $("#period");
  const cur = state.pinned && state.period ? state.period : info.latest_month; // else follow the latest
  sel.innerHTML = info.periods.slice().reverse().map((p) => `<option ${p === cur ? "selected" : ""}>${esc(p)}</option>`).join("");
  state.period = cur;
  const g = $("#group");
  const groups = info.groups.filter((x) => x !== "all");
  g.innerHTML = `<option value="all">Whole book</option>` + groups.map((x) => `<option value="${esc(x)}" ${x === state.group ? "selected" : ""}>${esc(x.replace(":", ": "))}</option>`).join("");
  return info;
}

async function showPortfolio() {
  const info = await loadFilters();
  if (!state.period) {
    $("#view").innerHTML = `<p class="muted">No portfolio figures yet: is <code>healthmon readmodel</code> running and are snapshots arriving?</p>`;
    return;
  }
  const q = `period=${encodeURIComponent(state.period)}&group=${encodeURIComponent(state.group)}`;
  const [fig, trend] = await Promise.all([api(`/api/portfolio?${q}`), api(`/api/portfolio/trend?group=${encodeURIComponent(state.group)}&months=6`)]);
  const upto = trend.filter((t) => t.period <= state.period);
  $("#asof").textContent = fig.as_of || "–";
  $("#view").innerHTML = `
    <h2 id="portfolio-title">${esc(state.group === "all" ? "Whole book" : state.group)} · ${esc(fig.period)}</h2>
    <section class="tiles" aria-labelledby="portfolio-title">${tiles(fig, upto.length ? upto : [fig])}</section>
    <div class="grid2">
      <section><h2>Band distribution</h2><div class="panel">${bands(fig)}</div></section>
      <section><h2>MRR and satisfaction</h2><div class="panel">${bridge(fig)}</div></section>
    </div>
    <section><h2>At risk</h2><div class="panel">${atRisk(fig)}</div></section>
    <section><h2>Renewals ahead</h2><div class="panel">${renewals(fig)}</div></section>
    <p class="muted">${info.periods.length} periods in the read model.</p>`;
}

// The score history: a line over the days, the band thresholds as dashed lines.
function historyChart(history) {
  const pts = history.filter((h) => h.score !== null && h.score !== undefined);
  if (!pts.length) return `<p class="muted">No score history yet.</p>`;
  const w = 720, h = 220, l = 34, r = 8, t = 8, b = 22;
  const day = (s) => Date.parse(`${s}T00:00:00Z`) / 86400000;
  const d0 = day(pts[0].day), d1 = Math.max(day(pts[pts.length - 1].day), d0 + 1);
  const x = (s) => l + ((day(s) - d0) / (d1 - d0)) * (w - l - r);
  const y = (v) => t + (1 - v / 100) * (h - t - b);
  const line = pts.map((p, i) => `${i ? "L" : "M"}${x(p.day).toFixed(1)},${y(p.score).toFixed(1)}`).join(" ");
  const dots = pts.map((p) => `<circle cx="${x(p.day).toFixed(1)}" cy="${y(p.score).toFixed(1)}" r="2.5" class="pt" fill="var(--${p.band || "none"})"><title>${esc(p.day)}: ${num(p.score, 1)} (${esc(p.band)})</title></circle>`).join("");
  const grid = [0, 40, 60, 100].map((v) => `<line x1="${l}" x2="${w - r}" y1="${y(v)}" y2="${y(v)}" stroke="#ccc" ${v === 40 || v === 60 ? 'stroke-dasharray="4 3"' : ""}/><text x="${l - 6}" y="${y(v) + 4}" font-size="11" text-anchor="end" fill="#5f6368">${v}</text>`).join("");
  const labels = `<text x="${l}" y="${h - 6}" font-size="11" fill="#5f6368">${esc(pts[0].day)}</text><text x="${w - r}" y="${h - 6}" font-size="11" text-anchor="end" fill="#5f6368">${esc(pts[pts.length - 1].day)}</text>`;
  return `<svg id="history-chart" viewBox="0 0 ${w} ${h}" role="img" aria-label="Daily health score, ${pts.length} days, from ${num(pts[0].score, 1)} to ${num(pts[pts.length - 1].score, 1)}">${grid}${labels}<path d="${line}" fill="none" stroke="#0b57d0" stroke-width="2"/>${dots}</svg>`;
}

async function showAccount(id) {
  const a = await api(`/api/accounts/${encodeURIComponent(id)}`);
  const s = a.snapshot, acc = s.account || {}, m = s.metrics || {};
  const comps = (s.components || []).map((c) => `<tr><td>${esc(c.label || c.name)}</td><td class="num">${num(c.score, 1)}</td><td class="num">${num(c.weight, 0)}</td><td class="num">${num(c.contribution, 1)}</td></tr>`).join("");
  const drivers = (s.drivers || []).map((d) => `<li>${esc(d.text)} <span class="muted">(−${num(d.points_lost, 1)} points)</span></li>`).join("");
  const alerts = a.alerts.slice(0, 20).map((x) => `<tr><td>${esc(x.status)}</td><td>${esc(x.severity)}</td><td>${esc(x.summary || x.rule_id)}</td><td>${esc(x.starts_at || "")}</td><td>${esc(x.action || "")}</td></tr>`).join("");
  const silences = a.silences.map((x) => `<li>${esc(JSON.stringify(x.matchers))} until ${esc(new Date(x.ends_at * 1000).toISOString())} ${esc(x.comment)}</li>`).join("");
  $("#asof").textContent = s.as_of;
  $("#view").innerHTML = `
    <p><a href="#/">← Portfolio</a></p>
    <h2 id="account-name">${esc(acc.name || s.account_id)} ${band(s.band)}</h2>
    <div class="kv">
      <div>Score<b data-field="score">${num(s.score, 1)}</b></div>
      <div>MRR<b>${money(m.mrr)}</b></div>
      <div>Renews in<b>${m.days_to_renewal === null || m.days_to_renewal === undefined ? "–" : `${m.days_to_renewal} d`}</b></div>
      <div>CSM<b>${esc(acc.csm_name || acc.csm_email || "–")}</b></div>
      <div>Segment<b>${esc(acc.segment || "–")}</b></div>
      <div>${m.canceled ? "<b>Canceled</b>" : ""}</div>
    </div>
    <section><h2>Score history</h2><div class="panel chart">${historyChart(a.history)}</div></section>
    <div class="grid2">
      <section><h2>Components</h2><div class="panel"><table id="components"><thead><tr><th>Component</th><th class="num">Score</th><th class="num">Weight</th><th class="num">Points</th></tr></thead><tbody>${comps}</tbody></table></div></section>
      <section><h2>Why</h2><div class="panel">${drivers ? `<ul class="drivers" id="drivers">${drivers}</ul>` : `<p class="muted">Nothing costs points.</p>`}</div></section>
    </div>
    <section><h2>Alerts</h2><div class="panel">${alerts ? `<table id="alerts"><thead><tr><th>Status</th><th>Severity</th><th>What</th><th>Since</th><th>Next step</th></tr></thead><tbody>${alerts}</tbody></table>${a.alerts.length > 20 ? `<p class="muted">The latest 20 of ${a.alerts.length}: <a href="/api/alerts?account=${encodeURIComponent(s.account_id)}">all as JSON</a>.</p>` : ""}` : `<p class="muted">No alerts.</p>`}</div></section>
    <section><h2>Silences</h2><div class="panel">${silences ? `<ul>${silences}</ul>` : `<p class="muted">None.</p>`}</div></section>`;
}

async function render() {
  const m = location.hash.match(/^#\/account\/(.+)$/);
  try {
    if (m) await showAccount(decodeURIComponent(m[1]));
    else await showPortfolio();
    document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
  } catch (err) {
    $("#view").innerHTML = `<p role="alert">Could not load: ${esc(err.message)}</p>`;
  }
}

let pending = null;
function scheduleRender() {
  if (pending) return;
  pending = setTimeout(async () => {
    pending = null;
    await render();
    document.body.dataset.updates = String(Number(document.body.dataset.updates) + 1);
  }, 250);
}

function connect() {
  const live = $("#live");
  const es = new EventSource("/api/events");
  es.addEventListener("hello", () => { live.dataset.state = "live"; live.textContent = "live"; });
  es.addEventListener("update", () => { live.textContent = `live · updated ${new Date().toLocaleTimeString()}`; scheduleRender(); });
  es.onerror = () => { live.dataset.state = "offline"; live.textContent = "reconnecting…"; };
}

window.addEventListener("hashchange", () => { render(); $("#view").focus(); });
document.addEventListener("DOMContentLoaded", () => {
  $("#period").addEventListener("change", (e) => { state.period = e.target.value; state.pinned = true; render(); });
  $("#group").addEventListener("change", (e) => { state.group = e.target.value; render(); });
  render();
  connect();
});
