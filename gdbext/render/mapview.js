// Draws the address space embedded in #data on a canvas (gdbext map --format html).
// Addresses are page numbers (4 KiB pages, at most 2^52: exact as JavaScript numbers).
// Views: "log" shows a window of the whole space where every range and every gap has a width
// of 1 + log2(its pages), so that a 4 KiB page and a 128 TiB hole are both seen; below 1 GiB
// the window is "linear" (width proportional to size), down to single pages.
// The URL fragment #zoom=0xLO-0xHI selects a window; the page reports what it drew, with the
// pixel boxes of regions, labels and ranges, as JSON in #drawn (read by the tests).
// With --diff (D.diff), ranges are coloured by their change state (attrs' sixth field) in place
// of their permissions, unchanged ones dimmed, and hovering shows the change.
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("data").textContent);
  const TOP = 2 ** 52;
  const LOWER_END = 2 ** (D.vbits - 1 - 12);
  const HIGHER_START = TOP - LOWER_END;
  const LIN_PAGES = 2 ** 18;
  const MIN_PAGES = 8;
  const HOLE_WEIGHT = 12;
  const PERM_COLORS = { "r--": "#9e9e9e", "rw-": "#43a047", "r-x": "#1e88e5", "rwx": "#e53935" };
  const DIFF_COLORS = { same: "#dadada", changed: "#1565c0", removed: "#c62828", added: "#2e7d32" };
  const REGION_COLORS = ["#e8eef6", "#d6e0ee"];
  const ALIAS_STROKE = "#ff9800";
  const SEVERITY_COLORS = { critical: "#6a1b9a", high: "#b71c1c", medium: "#f57c00", low: "#fbc02d",
                            info: "#90a4ae" };

  // --- the records --------------------------------------------------------------------------
  const n = D.r.length / 4;
  const S = new Float64Array(n), E = new Float64Array(n), F = new Float64Array(n);
  const A = new Int32Array(n), X = new Int32Array(n);
  {
    let end = 0, frame = 0, extra = 0;
    for (let i = 0; i < n; i++) {
      const k = 4 * i, at = D.attrs[D.r[k + 2]];
      S[i] = end + D.r[k];
      E[i] = end = S[i] + D.r[k + 1];
      A[i] = D.r[k + 2];
      X[i] = -1;
      if (at[4] === "r") {
        F[i] = frame + D.r[k + 3];
        frame = F[i] + D.r[k + 1];
      } else {
        F[i] = -1;
        X[i] = extra++;
      }
    }
  }
  const regions = D.regions;

  // --- the log-weighted scale: breakpoints P, cumulative widths U -------------------------
  const points = [0, LOWER_END, HIGHER_START, TOP];
  for (let i = 0; i < n; i++) points.push(S[i], E[i]);
  for (const r of regions) points.push(r[0]);
  const P = Float64Array.from(points).sort().filter((v, i, a) => i === 0 || v !== a[i - 1]);
  const U = new Float64Array(P.length);
  for (let i = 1; i < P.length; i++) {
    const pages = P[i] - P[i - 1];
    const hole = P[i - 1] === LOWER_END && P[i] === HIGHER_START;
    U[i] = U[i - 1] + (hole ? HOLE_WEIGHT : 1 + Math.log2(pages));
  }
  const UTOP = U[U.length - 1];

  function upper(arr, v) {  // first index with arr[i] > v
    let lo = 0, hi = arr.length;
    while (lo < hi) { const m = (lo + hi) >> 1; if (arr[m] > v) hi = m; else lo = m + 1; }
    return lo;
  }
  function uOf(vpn) {
    const i = Math.min(Math.max(upper(P, vpn) - 1, 0), P.length - 2);
    return U[i] + (U[i + 1] - U[i]) * (vpn - P[i]) / (P[i + 1] - P[i]);
  }
  function vpnOfU(u) {
    const i = Math.min(Math.max(upper(U, u) - 1, 0), U.length - 2);
    return P[i] + (P[i + 1] - P[i]) * (u - U[i]) / (U[i + 1] - U[i]);
  }

  const US = new Float64Array(n), UE = new Float64Array(n);  // each range's ends on that scale
  for (let i = 0; i < n; i++) { US[i] = uOf(S[i]); UE[i] = uOf(E[i]); }
  // What a range is coloured by: its permissions, or with --diff its change state; where
  // ranges share a pixel the highest key wins (W+X, or added).
  const KEYS = D.diff ? ["same", "changed", "removed", "added"] : ["r--", "rw-", "r-x", "rwx"];
  const COLORS = D.diff ? DIFF_COLORS : PERM_COLORS;
  const PRIORITY = {};
  KEYS.forEach((k, j) => { PRIORITY[k] = j; });
  function keyOf(at) { return D.diff ? (at[5] || "same") : at[0]; }
  function notable(pri) { return D.diff ? pri > 0 : pri === 3; }

  // --- the view ---------------------------------------------------------------------------
  // log: {mode, u0, u1}; linear: {mode, base (an integer page), off, span} (base + off is the
  // window's start: an integer base keeps page numbers near 2^52 exact).
  let view = { mode: "log", u0: 0, u1: UTOP };
  function windowPages() {
    if (view.mode === "log") return [vpnOfU(view.u0), vpnOfU(view.u1)];
    return [view.base + view.off, view.base + view.off + view.span];
  }
  function setWindow(lo, hi) {
    lo = Math.max(0, Math.min(lo, TOP - MIN_PAGES));
    hi = Math.min(TOP, Math.max(hi, lo + MIN_PAGES));
    if (hi - lo <= LIN_PAGES) {
      const base = Math.floor(lo);
      view = { mode: "lin", base: base, off: lo - base, span: hi - lo };
    } else {
      view = { mode: "log", u0: uOf(lo), u1: uOf(hi) };
    }
  }
  function settle() {  // switch modes at the threshold, keep the window inside the space
    if (view.mode === "log") {
      const w = Math.min(view.u1 - view.u0, UTOP);
      view.u0 = Math.max(0, Math.min(view.u0, UTOP - w));
      view.u1 = view.u0 + w;
      const [lo, hi] = windowPages();
      if (hi - lo <= LIN_PAGES) setWindow(lo, hi);
    } else {
      const shift = Math.floor(view.off);
      view.base += shift;
      view.off -= shift;
      view.span = Math.max(view.span, MIN_PAGES);
      if (view.span > LIN_PAGES) setWindow(view.base + view.off, view.base + view.off + view.span);
      else if (view.base + view.off < 0) { view.base = 0; view.off = 0; }
      else if (view.base + view.off + view.span > TOP) setWindow(TOP - view.span, TOP);
    }
  }

  // --- the canvas -------------------------------------------------------------------------
  const canvas = document.getElementById("map");
  const ctx = canvas.getContext("2d");
  const LEFT = 64, OV = [4, 22], FIND = [25, 32], REG = [34, 66], LANES = { user: [72, 118], kernel: [124, 170] };
  const AXIS = 176, HEIGHT = 204;
  let W = 800;
  const hatch = (function () {
    const c = document.createElement("canvas");
    c.width = c.height = 8;
    const g = c.getContext("2d");
    g.strokeStyle = ALIAS_STROKE;
    g.lineWidth = 2;
    g.beginPath(); g.moveTo(0, 8); g.lineTo(8, 0); g.stroke();
    return ctx.createPattern(c, "repeat");
  })();

  function xOf(vpn) {
    if (view.mode === "log") return LEFT + (uOf(vpn) - view.u0) / (view.u1 - view.u0) * W;
    return LEFT + ((vpn - view.base) - view.off) / view.span * W;
  }
  function vpnAt(x) {
    const f = (x - LEFT) / W;
    if (view.mode === "log") return Math.floor(vpnOfU(view.u0 + f * (view.u1 - view.u0)));
    return view.base + Math.floor(view.off + f * view.span);
  }
  function hex(vpn) { return "0x" + (BigInt(Math.round(vpn)) << 12n).toString(16).padStart(16, "0"); }
  function size(pages) {
    let b = pages * 4096;
    for (const u of ["", "K", "M", "G", "T", "P", "E"]) {
      if (b < 1024 || u === "E") return (Number.isInteger(b) ? b : b.toFixed(1)) + (u || " bytes");
      b /= 1024;
    }
    return "";
  }
  function regionAt(vpn) {
    const i = upper(Float64Array.from(regions, (r) => r[0]), vpn) - 1;
    return i >= 0 && vpn < regions[i][1] ? regions[i][2] : "";
  }
  function laneOf(i) { return D.attrs[A[i]][1] ? "user" : "kernel"; }

  function xOfU(u) { return LEFT + (u - view.u0) / (view.u1 - view.u0) * W; }

  // Paints ranges in address order into one strip, in whole pixels (crisp edges, and colours
  // a screenshot shows as drawn): ranges that fall in pixels already painted only raise
  // their colour to the most dangerous permissions found there (W+X first), so that a strip
  // of 75,000 ranges costs a few hundred rectangles; a wide range gets a white line where it
  // begins; an alias is hatched and labelled. With a report, the boxes painted are listed.
  function painter(band, rep) {
    const y = band[0], h = band[1] - band[0];
    let p = null;
    function paint(q) {
      const key = KEYS[q.pri];
      ctx.fillStyle = COLORS[key];
      ctx.fillRect(q.x0, y, q.x1 - q.x0, h);
      if (q.x1 - q.x0 >= 6) { ctx.fillStyle = "#fff"; ctx.fillRect(q.x0, y, 1, h); }
      const at = D.attrs[A[q.first]];
      if (at[4] === "a") {
        ctx.fillStyle = hatch;
        ctx.fillRect(q.x0, y, q.x1 - q.x0, h);
        const e = D.extra[X[q.first]], text = "alias x" + e[3] + " of " + hex(e[2]);
        if (rep && q.x1 - q.x0 > ctx.measureText(text).width + 6) {
          ctx.fillStyle = "#000";
          ctx.fillText(text, q.x0 + 3, y + h / 2);
          rep.labels.push({ text: text, name: text, x: rep.canvas[0] + q.x0 + 3,
                            y: rep.canvas[1] + y, w: 0, h: 0 });
        }
      }
      if (rep && q.x1 - q.x0 >= 3 && rep.boxes.length < 400) {
        rep.boxes.push({ x: rep.canvas[0] + q.x0, y: rep.canvas[1] + y, w: q.x1 - q.x0, h: h,
                         perm: D.diff ? at[0] : key, state: D.diff ? key : "", lane: laneOf(q.first),
                         kind: at[4], color: COLORS[key],
                         va: hex(S[q.first]), end: hex(E[q.last]), ranges: q.last - q.first + 1 });
      }
    }
    return {
      add: function (fx0, fx1, i) {
        const at = D.attrs[A[i]], pri = PRIORITY[keyOf(at)], alias = at[4] === "a";
        let x0 = Math.round(fx0), x1 = Math.max(Math.round(fx1), x0 + (notable(pri) ? 2 : 1));
        if (p !== null && x0 < p.x1) {
          if (x1 <= p.x1 && !alias) { p.pri = Math.max(p.pri, pri); p.last = i; return; }
          if (pri === p.pri && !alias && D.attrs[A[p.first]][4] !== "a") { p.x1 = x1; p.last = i; return; }
          x0 = p.x1;
        }
        if (p !== null) paint(p);
        p = { x0: x0, x1: x1, pri: pri, first: i, last: i };
      },
      flush: function () { if (p !== null) paint(p); p = null; },
    };
  }

  let report = null;
  function draw() {
    const t = performance.now();
    W = Math.max(200, document.documentElement.clientWidth - LEFT - 40);
    canvas.width = LEFT + W + 8;
    canvas.height = HEIGHT;
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.font = "12px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    const rect = canvas.getBoundingClientRect();
    const ox = Math.round(rect.left + window.scrollX), oy = Math.round(rect.top + window.scrollY);
    report = { mode: view.mode, window: [], regions: [], labels: [], boxes: [], colors: {}, states: {},
               lanes: {}, canvas: [ox, oy, canvas.width, canvas.height] };
    const [lo, hi] = windowPages();
    report.window = [hex(lo), hex(hi)];

    // overview: the whole space, log-weighted, with the window marked
    const ovx = (u) => LEFT + u / UTOP * W;
    ctx.fillStyle = "#f0f0f0";
    ctx.fillRect(LEFT, OV[0], W, OV[1] - OV[0]);
    const strip = painter(OV);
    for (let i = 0; i < n; i++) strip.add(ovx(US[i]), ovx(UE[i]), i);
    strip.flush();
    const hole0 = ovx(uOf(LOWER_END)), hole1 = ovx(uOf(HIGHER_START));
    ctx.fillStyle = "#555";
    ctx.fillRect(hole0, OV[0], hole1 - hole0, OV[1] - OV[0]);
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 2;
    const w0 = ovx(uOf(lo)), w1 = ovx(uOf(hi));
    ctx.strokeRect(w0, OV[0] - 1, Math.max(2, w1 - w0), OV[1] - OV[0] + 2);
    ctx.fillStyle = "#333";
    ctx.fillText("all", 4, (OV[0] + OV[1]) / 2);

    ctx.save();
    ctx.beginPath();
    ctx.rect(LEFT, 0, W, HEIGHT);
    ctx.clip();
    // regions, and the non-canonical hole
    const bands = regions.slice();
    if (!bands.length) bands.push([0, LOWER_END, "user half"], [HIGHER_START, TOP, "kernel half"]);
    bands.forEach(function (r, k) {
      if (r[1] <= lo || r[0] >= hi) return;
      const x0 = Math.max(LEFT, xOf(r[0])), x1 = Math.min(LEFT + W, xOf(r[1]));
      ctx.fillStyle = REGION_COLORS[k % 2];
      ctx.fillRect(x0, REG[0], x1 - x0, REG[1] - REG[0]);
      report.regions.push({ name: r[2], x: ox + x0, y: oy + REG[0], w: x1 - x0, h: REG[1] - REG[0],
                            color: REGION_COLORS[k % 2] });
      let label = r[2], width = ctx.measureText(label).width;
      while (label.length > 5 && width > x1 - x0 - 6) {  // cut to fit, with an ellipsis
        label = label.slice(0, label.endsWith("\u2026") ? -2 : -1) + "\u2026";
        width = ctx.measureText(label).width;
      }
      if (x1 - x0 > width + 6) {
        ctx.fillStyle = "#123";
        ctx.fillText(label, x0 + 3, (REG[0] + REG[1]) / 2);
        report.labels.push({ text: label, name: r[2], x: ox + x0 + 3, y: oy + REG[0], w: width,
                             h: REG[1] - REG[0] });
      }
    });
    if (HIGHER_START > lo && LOWER_END < hi) {
      const x0 = Math.max(LEFT, xOf(LOWER_END)), x1 = Math.min(LEFT + W, xOf(HIGHER_START));
      ctx.fillStyle = "#555";
      ctx.fillRect(x0, REG[0], x1 - x0, LANES.kernel[1] - REG[0]);
      if (x1 - x0 > 80) {
        ctx.fillStyle = "#fff";
        ctx.fillText("non-canonical", x0 + 3, (REG[0] + REG[1]) / 2);
      }
    }
    // the ranges, in the lane of their user bit; aliases hatched; W+X at least 2 px wide
    const lanes = { user: painter(LANES.user, report), kernel: painter(LANES.kernel, report) };
    for (let i = upper(E, lo); i < n && S[i] < hi; i++) {
      report.colors[D.attrs[A[i]][0]] = (report.colors[D.attrs[A[i]][0]] || 0) + 1;
      if (D.diff) { const k = keyOf(D.attrs[A[i]]); report.states[k] = (report.states[k] || 0) + 1; }
      const x0 = Math.max(LEFT - 2, view.mode === "log" ? xOfU(US[i]) : xOf(S[i]));
      const x1 = Math.min(LEFT + W + 2, view.mode === "log" ? xOfU(UE[i]) : xOf(E[i]));
      lanes[laneOf(i)].add(x0, x1, i);
    }
    lanes.user.flush();
    lanes.kernel.flush();
    // audit findings (--audit), at least 3 px wide
    report.findings = [];
    for (const f of D.findings) {
      if (f[1] <= lo || f[0] >= hi) continue;
      const x0 = Math.round(Math.max(LEFT, xOf(f[0])));
      const x1 = Math.max(x0 + 3, Math.round(Math.min(LEFT + W, xOf(f[1]))));
      ctx.fillStyle = SEVERITY_COLORS[f[2]] || "#000";
      ctx.fillRect(x0, FIND[0], x1 - x0, FIND[1] - FIND[0]);
      if (report.findings.length < 400) {
        report.findings.push({ x: ox + x0, y: oy + FIND[0], w: x1 - x0, h: FIND[1] - FIND[0],
                               severity: f[2], rule: f[3], va: hex(f[0]), end: hex(f[1]) });
      }
    }
    ctx.restore();
    // lane names, axis
    ctx.fillStyle = "#333";
    ctx.fillText("regions", 4, (REG[0] + REG[1]) / 2);
    for (const name in LANES) {
      ctx.fillText(name, 4, (LANES[name][0] + LANES[name][1]) / 2);
      report.lanes[name] = [oy + LANES[name][0], oy + LANES[name][1]];
      ctx.strokeStyle = "#ccc";
      ctx.lineWidth = 1;
      ctx.strokeRect(LEFT, LANES[name][0], W, LANES[name][1] - LANES[name][0]);
    }
    ctx.fillStyle = "#333";
    ctx.textBaseline = "top";
    for (let k = 0; k <= 4; k++) {
      const x = LEFT + k * W / 4, text = hex(vpnAt(Math.min(x, LEFT + W - 1)));
      const tw = ctx.measureText(text).width;
      ctx.fillRect(x, AXIS, 1, 5);
      ctx.fillText(text, Math.min(Math.max(x - tw / 2, 0), LEFT + W - tw), AXIS + 7);
    }
    document.getElementById("mode").textContent =
      (view.mode === "log" ? "log-scaled (each range and gap: 1 + log2 of its pages)" : "linear") +
      ": " + report.window[0] + " - " + report.window[1] + " (" + size(hi - lo) + ")";
    report.draw_ms = performance.now() - t;
    if (firstPaint === null) firstPaint = performance.now();
    report.first_paint_ms = firstPaint;
    document.getElementById("drawn").textContent = JSON.stringify(report);
  }
  let firstPaint = null;

  // --- what is under the mouse ------------------------------------------------------------
  function findingsAt(x) {
    const lo = vpnAt(x - 3), hi = vpnAt(x + 3) + 1;
    const hits = D.findings.filter((f) => f[0] < hi && f[1] > lo).slice(0, 8);
    if (!hits.length) return "no audit finding here";
    return hits.map((f) => f[2] + " " + f[3] + ": " + hex(f[0]) + " - " + hex(f[1]) + "\n  " + f[4])
      .join("\n");
  }
  function find(x, y) {
    let lane = null;
    for (const name in LANES) if (y >= LANES[name][0] && y < LANES[name][1]) lane = name;
    const vpn = vpnAt(x);
    if (lane === null) return { vpn: vpn, i: -1 };
    const slack = view.mode === "log" ? 3 : 0;
    const lo = vpnAt(x - slack), hi = vpnAt(x + slack) + 1;
    let best = -1;
    for (let i = upper(E, lo); i < n && S[i] < hi; i++) {
      if (laneOf(i) !== lane) continue;
      if (S[i] <= vpn && vpn < E[i]) return { vpn: vpn, i: i };
      if (best < 0) best = i;
    }
    return { vpn: vpn, i: best };
  }
  // The table indices a walk of page vpn takes, down to the leaf of a page_size page.
  function indices(vpn, pageSize) {
    const names = D.levels === 5 ? ["PML5", "PML4", "PDPT", "PD", "PT"] : ["PML4", "PDPT", "PD", "PT"];
    const leafLevel = pageSize >= 2 ** 30 ? 3 : pageSize >= 2 ** 21 ? 2 : 1;
    const va = BigInt(vpn) << 12n, out = [];
    for (let level = D.levels; level >= leafLevel; level--) {
      const index = Number((va >> BigInt(12 + 9 * (level - 1))) & 511n);
      out.push(names[D.levels - level] + "[" + index + "]");
    }
    return out.join(" ");
  }
  function describe(hit) {
    const i = hit.i;
    if (i < 0) return hex(hit.vpn) + "  " + (regionAt(hit.vpn) || "") + "\nnot mapped here";
    const at = D.attrs[A[i]];
    const lines = [hex(S[i]) + " - " + hex(E[i]) + "  (" + size(E[i] - S[i]) + ")",
                   "permissions: " + at[0] + (at[1] ? " user" : " kern") + (at[0] === "rwx" ? "  W+X" : ""),
                   "region: " + (regionAt(S[i]) || "-")];
    if (at[4] === "r") {
      lines.push("physical: " + hex(F[i]) + " - " + hex(F[i] + E[i] - S[i]));
      lines.push("page size: " + size(at[3] / 4096) + (at[2] ? "   flags: " + at[2] : ""));
      lines.push("walk of " + hex(S[i]) + ": " + indices(S[i], at[3]) +
                 "  (each entry: gdbext translate " + hex(S[i]) + ")");
    } else if (at[4] === "a") {
      const e = D.extra[X[i]];
      lines.push("alias: " + e[3] + " more links to the level-" + e[1] + " table " + e[0] +
                 " first walked at " + hex(e[2]) + ", " + e[4] + " leaves each" +
                 (e[5] ? "" : " (the path allows other permissions there)"));
    } else {
      const e = D.extra[X[i]];
      lines.push("aggregated: " + e[0] + " ranges, " + e[1] + " leaves (zoom in for each)");
    }
    if (D.diff) lines.push(changeText(i));
    return lines.join("\n");
  }
  // --diff: the change a range lies in (the changes are sorted and disjoint).
  const CS = D.diff ? Float64Array.from(D.diff.changes, (c) => c[0]) : null;
  function changeText(i) {
    const state = D.attrs[A[i]][5];
    if (!state) return "unchanged from " + D.diff.old;
    const j = upper(CS, S[i]) - 1, c = j >= 0 ? D.diff.changes[j] : null;
    if (c === null || S[i] >= c[1]) return state;
    return state + (c[3] ? " (" + c[3] + ")" : "") + ": " + hex(c[0]) + " - " + hex(c[1]) +
      "\n  was: " + c[4] + "\n  now: " + c[5];
  }
  const info = document.getElementById("info");
  let pinned = false;

  // --- interaction ------------------------------------------------------------------------
  function writeHash() {
    const [lo, hi] = windowPages();
    history.replaceState(null, "", "#zoom=" + hex(lo) + "-" + hex(Math.ceil(hi)));
  }
  function readHash() {
    const at = /at=(0x[0-9a-f]+)/i.exec(location.hash);
    if (at) {  // #at=0xVA: the mapping holding VA, pinned, as a click on it shows it
      const vpn = Number(BigInt(at[1]) >> 12n), i = upper(S, vpn) - 1;
      pinned = true;
      info.textContent = describe({ vpn: vpn, i: i >= 0 && vpn < E[i] ? i : -1 });
    }
    const m = /zoom=(0x[0-9a-f]+)-(0x[0-9a-f]+)/i.exec(location.hash);
    if (!m) { view = { mode: "log", u0: 0, u1: UTOP }; return; }
    setWindow(Number(BigInt(m[1]) >> 12n), Number((BigInt(m[2]) + 4095n) >> 12n));
    settle();
  }
  function zoom(x, factor) {
    const f = Math.min(Math.max((x - LEFT) / W, 0), 1);
    if (view.mode === "log") {
      const uc = view.u0 + f * (view.u1 - view.u0), w = (view.u1 - view.u0) * factor;
      view.u0 = uc - f * w;
      view.u1 = view.u0 + w;
    } else {
      const c = view.off + f * view.span;
      view.span = view.span * factor;
      view.off = c - f * view.span;
    }
    settle();
    draw();
    writeHash();
  }
  function pan(dx) {
    if (view.mode === "log") {
      const du = -dx / W * (view.u1 - view.u0);
      view.u0 += du;
      view.u1 += du;
    } else {
      view.off -= dx / W * view.span;
    }
    settle();
    draw();
  }
  canvas.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    zoom(ev.offsetX, Math.exp(ev.deltaY * 0.002));
  }, { passive: false });
  let drag = null;
  canvas.addEventListener("mousedown", function (ev) { drag = { x: ev.offsetX, moved: false }; });
  window.addEventListener("mouseup", function () { if (drag && drag.moved) writeHash(); });
  canvas.addEventListener("mousemove", function (ev) {
    if (drag && (ev.buttons & 1)) {
      if (Math.abs(ev.offsetX - drag.x) > 2) drag.moved = true;
      if (drag.moved) { pan(ev.offsetX - drag.x); drag.x = ev.offsetX; }
      return;
    }
    if (pinned || ev.offsetX < LEFT) return;
    const onFindings = ev.offsetY >= FIND[0] - 1 && ev.offsetY < FIND[1] + 1 && D.findings.length;
    info.textContent = onFindings ? findingsAt(ev.offsetX) : describe(find(ev.offsetX, ev.offsetY));
  });
  canvas.addEventListener("click", function (ev) {
    const moved = drag && drag.moved;
    drag = null;
    if (moved) return;
    if (ev.offsetY < OV[1] + 2) {  // the overview: centre the window there
      const u = (ev.offsetX - LEFT) / W * UTOP, [lo, hi] = windowPages();
      const c = vpnOfU(u);
      if (view.mode === "log") { const w = view.u1 - view.u0; view.u0 = u - w / 2; view.u1 = u + w / 2; }
      else setWindow(c - (hi - lo) / 2, c + (hi - lo) / 2);
      settle(); draw(); writeHash();
      return;
    }
    const hit = find(ev.offsetX, ev.offsetY);
    pinned = hit.i >= 0;
    info.textContent = describe(hit) + (pinned ? "\n(pinned: click elsewhere to unpin)" : "");
  });
  canvas.addEventListener("dblclick", function (ev) {
    if (ev.offsetY >= REG[0] && ev.offsetY < REG[1]) {  // a region: zoom to it
      const vpn = vpnAt(ev.offsetX);
      for (const r of regions) if (r[0] <= vpn && vpn < r[1]) setWindow(r[0], r[1]);
    } else {
      zoom(ev.offsetX, 0.25);
      return;
    }
    draw(); writeHash();
  });
  document.getElementById("reset").addEventListener("click", function () {
    view = { mode: "log", u0: 0, u1: UTOP }; draw(); writeHash();
  });
  window.addEventListener("hashchange", function () { readHash(); draw(); });
  window.addEventListener("resize", draw);

  // --- notes and legend -------------------------------------------------------------------
  const notes = [];
  if (D.diff) {
    notes.push("Changes from " + D.diff.old + " (A) to " + D.diff.new + " (B): " + D.diff.count +
      " change" + (D.diff.count === 1 ? "" : "s") + "; B's mappings and A's removed ones, coloured by " +
      "change, unchanged ones grey.");
  }
  if (D.aggregated) notes.push("Aggregated: " + D.aggregated + ".");
  for (const w of D.warnings) notes.push(w);
  if (D.findings.length) notes.push(D.findings.length + " audit finding" +
    (D.findings.length === 1 ? "" : "s") + " marked above the regions (hover them).");
  if (D.anomalies.length) notes.push(D.anomalies.length + " entries were not followed (anomalies): " +
    D.anomalies.slice(0, 5).map((a) => a[1] + " at " + hex(a[0])).join(", "));
  const wxCount = D.attrs.map((a, k) => a[0] === "rwx" ? k : -1).filter((k) => k >= 0);
  if (wxCount.length) {
    let c = 0;
    for (let i = 0; i < n; i++) if (wxCount.includes(A[i])) c++;
    notes.push(c + " W+X range" + (c === 1 ? "" : "s") + (D.diff ? "." : " (red)."));
  }
  document.getElementById("notes").innerHTML = "";
  for (const t of notes) {
    const d = document.createElement("div");
    d.textContent = t;
    document.getElementById("notes").appendChild(d);
  }
  const legend = document.getElementById("legend");
  const items = D.diff
    ? [["added", "added"], ["removed", "removed"], ["changed", "changed"], ["same", "unchanged"]]
    : [["r--", "r-- read-only"], ["rw-", "rw- read-write"], ["r-x", "r-x executable"], ["rwx", "rwx W+X"]];
  for (const [p, name] of items) {
    const s = document.createElement("span");
    s.innerHTML = '<i style="background:' + COLORS[p] + '"></i>' + name;
    legend.appendChild(s);
  }
  const s = document.createElement("span");
  s.innerHTML = '<i style="background:repeating-linear-gradient(45deg,#fff,#fff 3px,' + ALIAS_STROKE +
    ' 3px,' + ALIAS_STROKE + ' 5px)"></i>alias (a table linked again)';
  legend.appendChild(s);
  const meta = document.createElement("span");
  meta.textContent = D.leaves + " leaves, " + n + " ranges, " + D.levels + "-level paging, root " +
    D.root + (D.layout ? ", " + D.layout : "");
  legend.appendChild(meta);

  readHash();
  draw();
})();
