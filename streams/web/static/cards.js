// healthmon dashboard: the "Scorecard" section (GET /api/cards): the card in force, the proposed
// candidate against it (held-out figures, how many accounts would change band), accept / roll back
// (POST /api/cards/{version}/accept, /api/cards/rollback; docs/promotion.md). Its own section, like
// accuracy.js; uses app.js's esc.
"use strict";

(() => {
  const $c = (sel) => document.querySelector(sel);
  const f3 = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(3));
  const ci = (r) => (r && r.auc_ci ? `${f3(r.auc_ci.low)}–${f3(r.auc_ci.high)}` : "–");
  const since = (c) => (c.effective_from_iso ? `in force from ${esc(c.effective_from_iso)}` : "the configured card");
  // The outcome of the last decision, kept across the re-render that follows it (a refusal's reason
  // would otherwise vanish the moment the section reloads).
  let status = "";

  function figures(v) {
    const row = (label, r) => `<tr><th scope="row">${label}</th><td class="num">${f3(r.figures.auc)}</td><td class="num">${ci(r)}</td>
      <td class="num">${f3(r.figures.red_precision)}</td><td class="num">${f3(r.figures.red_recall)}</td></tr>`;
    const moves = Object.entries(v.band_changes).map(([k, n]) => `${esc(k)} ${n}`).join(", ") || "none";
    return `<table id="cards-figures"><thead><tr><th></th><th class="num">Held-out AUC</th><th class="num">95% interval</th><th class="num">Red precision</th><th class="num">Red recall</th></tr></thead>
      <tbody>${row("In force", v.current)}${row("Candidate", v.candidate)}</tbody></table>
      <p id="cards-moves"><b>${v.accounts_changing_band}</b> accounts would change band (${moves}).</p>`;
  }

  async function decide(path) {
    const by = window.prompt("Your name or email (recorded with the decision):");
    if (!by) return;
    const reason = window.prompt("Why?") || "";
    const resp = await fetch(path, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ by, reason }),
    });
    const body = await resp.json();
    status = resp.ok ? `recorded: ${body.change.action} ${body.change.version}` : body.error.message;
    refresh();
  }

  async function refresh() {
    const section = $c("#cards");
    if (!section) return;
    section.hidden = /^#\/account\//.test(location.hash);
    try {
      const r = await api("/api/cards");
      const p = r.proposed;
      const cand = p
        ? `<h3 class="sub">Candidate <code>${esc(p.version)}</code>, proposed by ${esc(p.by)}</h3>${p.verdict ? figures(p.verdict) : ""}
           <button type="button" id="cards-accept" data-version="${esc(p.version)}">Accept</button>`
        : `<p class="muted">No candidate proposed (healthmon calibrate --propose --publish).</p>`;
      const history = r.history.slice(0, 10).map((h) => `<tr><td>${esc(h.status)}</td><td><code>${esc(h.version)}</code></td>
        <td>${esc(h.effective_from_iso || "–")}</td><td>${esc(h.by)}</td><td>${esc(h.reason)}</td></tr>`).join("");
      $c("#cards-body").innerHTML = `<p id="cards-in-force">In force: <code>${esc(r.in_force.version)}</code>, ${since(r.in_force)}
          ${r.can_roll_back ? ` <button type="button" id="cards-rollback">Roll back</button>` : ""}</p>
        ${cand}<p id="cards-status" role="status" class="muted">${esc(status)}</p>
        ${history ? `<table id="cards-history"><thead><tr><th>Decision</th><th>Card</th><th>Effective</th><th>By</th><th>Why</th></tr></thead><tbody>${history}</tbody></table>` : ""}`;
      $c("#cards-accept")?.addEventListener("click", (e) => decide(`/api/cards/${encodeURIComponent(e.target.dataset.version)}/accept`));
      $c("#cards-rollback")?.addEventListener("click", () => decide("/api/cards/rollback"));
      section.dataset.loaded = String(Number(section.dataset.loaded || 0) + 1);
    } catch (err) {
      $c("#cards-body").innerHTML = `<p role="alert">Could not load the scorecards: ${esc(err.message)}</p>`;
    }
  }

  window.addEventListener("hashchange", refresh);
  document.addEventListener("DOMContentLoaded", refresh);
})();
