// healthmon dashboard: the "Score accuracy" panel (GET /api/accuracy) below the portfolio view.
// Seed 000: "Track accuracy: do low-health-score customers actually churn?". Its own file and its own
// section (#accuracy, outside #view), so app.js's re-renders never touch it; it refreshes when app.js
// has rendered (body[data-rendered] changes), at most every 15 s, and hides on an account's page.
"use strict";

(() => {
  const $a = (sel) => document.querySelector(sel);
  const dash = (v, f) => (v === null || v === undefined ? "–" : f(v));
  const two = (v) => dash(v, (x) => Number(x).toFixed(2));
  const pc = (v) => dash(v, (x) => `${(100 * x).toFixed(1)}%`);
  const lift = (v) => dash(v, (x) => `${Number(x).toFixed(2)}×`);
  const bandA = (b) => (b ? `<span class="band ${esc(b)}">${esc(b)}</span>` : "–");
  const REASON = { constant: "(nearly) the same for every account", no_data: "no account sends its input" };
  const monthTs = (p) => Date.parse(`${p}-01T00:00:00Z`) / 1000;
  const MONTH = (v) => new Date(v * 1000).toLocaleDateString("en-GB", { month: "short", year: "2-digit", timeZone: "UTC" });

  function figureRow(label, f) {
    return `<tr data-horizon="${esc(label)}"><th scope="row">${esc(label)}</th><td class="num auc">${two(f.auc)}</td>
      <td class="num">${pc(f.red_precision)}</td><td class="num">${pc(f.red_recall)}</td>
      <td class="num">${lift(f.bottom_decile_lift)}</td><td class="num">${f.churners} / ${f.scored}</td></tr>`;
  }
  const HEAD = `<thead><tr><th></th><th class="num">AUC</th><th class="num">Red precision</th><th class="num">Red recall</th><th class="num">Bottom-decile lift</th><th class="num">Churners / scored</th></tr></thead>`;

  function windowTable(r) {
    const rows = ["30", "60"].filter((h) => r.window[h]).map((h) => figureRow(`${h} days before`, r.window[h]));
    return `<table id="accuracy-window"><caption>Cancellations of the last ${r.window_days} days (${esc(r.window_start)} to ${esc(r.as_of)}), scored before they cancelled</caption>${HEAD}<tbody>${rows.join("")}</tbody></table>`;
  }

  function segmentTable(r) {
    const segs = Object.keys(r.by_segment);
    if (segs.length < 2) return "";
    const rows = segs.map((s) => figureRow(s, r.by_segment[s]["30"]).replace("<tr ", `<tr data-segment="${esc(s)}" `));
    return `<h3 class="sub">By segment, 30 days before</h3><table id="accuracy-segments">${HEAD}<tbody>${rows.join("")}</tbody></table>`;
  }

  function cancellations(r) {
    const last = r.cancellations.slice(-10).reverse();
    if (!last.length) return `<p class="muted">No account has cancelled in the read model's score lines yet: nothing to check the score against.</p>`;
    const rows = last.map((c) => `<tr data-account="${esc(c.account_id)}"><td><a href="#/account/${encodeURIComponent(c.account_id)}">${esc(c.account_id)}</a></td>
      <td>${esc(c.segment || "–")}</td><td>${esc(c.canceled_on)}</td>
      <td class="num">${dash(c.score_30, (x) => x.toFixed(1))}</td><td>${bandA(c.band_30)}</td>
      <td class="num">${dash(c.score_60, (x) => x.toFixed(1))}</td><td>${bandA(c.band_60)}</td></tr>`);
    return `<h3 class="sub">The latest cancellations (${r.cancellations.length} in all)</h3><table id="accuracy-cancellations"><thead><tr><th>Account</th><th>Segment</th><th>Cancelled</th><th class="num">Score 30 d before</th><th>Band</th><th class="num">Score 60 d before</th><th>Band</th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
  }

  function setAside(list) {
    if (!list.length) return `<p class="muted" id="set-aside-none">No measure set aside: every measure of the scorecard carries information in this book.</p>`;
    const rows = list.map((a) => `<tr data-measure="${esc(a.measure)}"><td>${esc(a.scorecard)}</td><td>${esc(a.component)} · ${esc(a.measure)}</td>
      <td>${esc(REASON[a.reason] || a.reason)}</td><td>${esc(a.text)}</td><td class="num">${a.accounts}</td></tr>`);
    return `<table id="set-aside"><thead><tr><th>Scorecard</th><th>Measure</th><th>Why</th><th>Detail</th><th class="num">Accounts</th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
  }

  let chart = null;
  function drawTrend(r) {
    if (chart) { chart.destroy(); chart = null; window.hmAccuracyChart = null; }
    const el = document.getElementById("accuracy-trend");
    const months = r.months.filter((m) => m.segment === "all");
    if (!el || !months.length) return;
    if (typeof uPlot === "undefined") { el.innerHTML = `<p class="muted">The chart library did not load.</p>`; return; }
    const pctv = (u, v) => (v === null ? "–" : v.toFixed(2));
    const data = [months.map((m) => monthTs(m.month)), months.map((m) => m.figures.auc), months.map((m) => m.figures.red_precision), months.map((m) => m.figures.red_recall)];
    const line = (label, stroke) => ({ label, stroke, width: 2, spanGaps: true, value: pctv });
    chart = new uPlot({
      width: Math.max(el.clientWidth - 4, 200), height: 180,
      scales: { x: { time: true }, y: { range: [0, 1] } },
      axes: [{ stroke: "#5f6368", size: 30, splits: (u) => u.data[0], values: (u, vs) => vs.map(MONTH) }, { stroke: "#5f6368", size: 50 }],
      series: [{ label: "Month", value: (u, v) => (v === null ? "–" : MONTH(v)) }, line("AUC", "#0b57d0"), line("Red precision", "#b3261e"), line("Red recall", "#8a6d00")],
    }, data, el);
    el.dataset.chart = "uplot";
    window.hmAccuracyChart = chart;
  }

  let last = 0;
  let busy = false;
  async function refresh(force = false) {
    const section = $a("#accuracy");
    if (!section) return;
    const onAccount = /^#\/account\//.test(location.hash);
    section.hidden = onAccount;
    if (onAccount || busy || (!force && Date.now() - last < 15000)) return;
    busy = true;
    try {
      const resp = await fetch("/api/accuracy", { headers: { Accept: "application/json" }, credentials: "same-origin" });
      const r = await resp.json();
      if (!resp.ok) throw new Error(r?.error?.message || resp.statusText);
      last = Date.now();
      const head = r.window["30"];
      const summary = head && head.churners
        ? `<p class="kv" id="accuracy-headline"><span><b>${two(head.auc)}</b>AUC, 30 days before</span> <span><b>${pc(head.red_precision)}</b>of red accounts cancelled</span> <span><b>${pc(head.red_recall)}</b>of cancellations were red</span> <span><b>${lift(head.bottom_decile_lift)}</b>bottom-decile lift</span></p>`
        : `<p class="muted" id="accuracy-headline">No cancellation in the last ${r.window_days} days yet.</p>`;
      $a("#accuracy-body").innerHTML = `${summary}
        <p class="muted legend">Does red mean churn in this book? Each account that cancelled, scored 30 and 60 days before; each account still a customer scored at the same moments. AUC: the chance a churner scored below an account that stayed (0.5 = a coin).</p>
        ${r.window["30"] ? windowTable(r) : ""}${segmentTable(r)}
        <h3 class="sub">Month by month (cancellations of the month, 30 days before)</h3><div class="chart-box" id="accuracy-trend" role="img" aria-label="AUC, red precision and red recall of each month's cancellations"></div>
        ${cancellations(r)}`;
      $a("#set-aside-body").innerHTML = setAside(r.set_aside);
      drawTrend(r);
      section.dataset.loaded = String(Number(section.dataset.loaded || 0) + 1);
    } catch (err) {
      $a("#accuracy-body").innerHTML = `<p role="alert">Could not load the score accuracy: ${esc(err.message)}</p>`;
    } finally {
      busy = false;
    }
  }

  window.addEventListener("hashchange", () => refresh(true));
  document.addEventListener("DOMContentLoaded", () => {
    refresh(true);
    new MutationObserver(() => refresh()).observe(document.body, { attributes: true, attributeFilter: ["data-rendered"] });
  });
})();
